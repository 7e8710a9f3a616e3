"""Masked methods: hide most of an image's patches and predict them from the
rest, in pixels (mae) or in the representation of a momentum target encoder
(ijepa); both train a ViT (the vit-tiny backbone) and share its token
plumbing and their narrow predictor transformer (``common``)."""
