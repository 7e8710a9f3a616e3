"""Methods, one file each under a family folder; see ``unsup.registry``."""
