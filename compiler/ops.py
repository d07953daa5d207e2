"""What lrpc knows about ONNX operator types, as named sets written once.

A pass, a rule or a check that asks "is this node a linear layer / a view / a random op?" reads the
answer here, so that adding an operator to a family is one line. Sets that encode one rule's own
argument (which ops keep ReLU sparsity, rules/sparsity.py; what a product's factor may pass through,
passes/recognize_products.py) stay with that argument, written in terms of these.
"""

# z = W·x (+ b): the layers the LRP rules act on (rules/linear_layers.LAYERS lowers each).
LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CONV_OPS = ("Conv", "ConvTranspose")
DENSE_OPS = ("Gemm", "MatMul")
BIAS_INPUT_OPS = ("Conv", "ConvTranspose", "Gemm")  # a linear layer whose third input is its bias

# The same values in a new shape: no copy, no arithmetic.
VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")

# Every output value is a value of the first input (a view, a copy, a max, a selection): signs are kept.
SELECTING_OPS = VIEW_OPS + (
    "MaxPool",
    "Transpose",
    "Dropout",
    "GlobalMaxPool",
    "ReduceMax",
    "Split",
    "Slice",
    "Gather",
    "GatherElements",
    "GatherND",
    "Expand",
    "Tile",
)

# Outputs that are never negative, whatever the input.
NONNEGATIVE_OPS = ("Relu", "Sigmoid", "Softmax", "Abs")

# Outputs drawn at random: a graph with one has no single float64 answer to compare with.
RANDOM_OPS = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli")
