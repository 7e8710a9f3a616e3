"""unsup: unsupervised visual representation learning, measured with few labels.

Pretrain an image encoder without labels by any method of the landscape, then
measure it on one few-label protocol against raw pixels, a random encoder and
a supervised model.
"""

from . import data as datasets
from .api import bench, features, pretrain, probe_run
from .errors import UnsupError
from .evaluate import probe
from .export import export_encoder
from .registry import all_methods, get_method
from .run import load_encoder, load_method

__version__ = "0.1.0"
__all__ = ["UnsupError", "all_methods", "bench", "datasets", "export_encoder", "features", "get_method", "load_encoder", "load_method", "pretrain",
           "probe", "probe_run"]
