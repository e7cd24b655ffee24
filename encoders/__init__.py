"""streamrec encoders: the item/user towers (model), item featurization, the incremental serving
path, safetensors checkpoints and training. Import the submodules directly; this package keeps
its import light so serving does not pull in training dependencies."""
