"""The names of the data sets and models panning knows, and each data set's default model.

Kept free of heavy imports (no torch) so that the command line can offer them as choices in ``--help``
without loading any of the code; panning.data and panning.models check that their registries match.
"""

DATASETS = ("mnist1d", "digits", "cifar10", "cifar100", "synthetic")
MODELS = ("mlp", "cnn1d", "cnn2d", "vgg19_bn", "resnet32")

#: The model a command uses for a data set when none is given.
DEFAULT_MODEL = {"mnist1d": "cnn1d", "digits": "cnn2d", "synthetic": "mlp", "cifar10": "vgg19_bn",
                 "cifar100": "vgg19_bn"}
