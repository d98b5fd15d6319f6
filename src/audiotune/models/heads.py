"""Classification heads and the shared dense layer, with the seed repositories' parameter names."""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class ClassificationHead(nn.Module):
    """``dense → [norm] → activation → dropout → outproj``; keys ``head.dense.weight`` etc.

    ``bottleneck=0`` makes a linear head on the pooled input, ``activation → dropout → outproj`` (the
    speech-emotion seed's ReLU → Linear); its ``ft`` embedding is the pooled input itself.
    """

    def __init__(self, input_size: int, bottleneck: int, output_size: int, activation: str = "relu",
                 final_dropout: float = 0.3, layernorm: bool = False):
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = bottleneck or input_size
        if bottleneck:
            layers["dense"] = nn.Linear(input_size, bottleneck)
            if layernorm:
                layers["norm"] = nn.LayerNorm(bottleneck)
        if activation != "none":
            layers[activation] = ACTIVATIONS[activation]()
        layers["dropout"] = nn.Dropout(final_dropout)
        layers["outproj"] = nn.Linear(width, output_size)
        self.head = nn.Sequential(layers)
        self.linear = not bottleneck

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)

    def first_dense(self, x: Tensor) -> Tensor:
        """Output of the first dense layer (the ``ft`` embedding); a linear head's input."""
        return x if self.linear else self.head[0](x)  # the "dense" layer, always first


def shared_dense(input_size: int, bottleneck: int) -> nn.Module:
    """The optional dense + ReLU shared by all heads (keys ``dense.dense.weight``)."""
    return nn.Sequential(OrderedDict(dense=nn.Linear(input_size, bottleneck), relu=nn.ReLU()))
