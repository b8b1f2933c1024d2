"""Pure functions: losses, crops, attention maps. Nothing in here imports the models or the training code."""
