"""What every algorithm of panning asks about a model it did not build: the one place that knows torchvision,
timm and Hugging Face models apart from the project's own.

- `logits(output)`: the class scores in whatever a forward returns (a tensor, a tuple or list whose first element
  they are, or an object with `.logits` such as a Hugging Face `ModelOutput`).
- `prunable` (the default filter) and `parameter_names`: which parameters of which modules are pruned by default:
  the weight of every Linear and Conv1d/2d/3d layer and of their subclasses (timm's Linear, the out_proj of
  nn.MultiheadAttention), the input projection of nn.MultiheadAttention (`in_proj_weight`, or the separate
  `q/k/v_proj_weight`), and the weight of Hugging Face's `Conv1D` (GPT-2's blocks; recognized by name so that
  transformers stays optional). Embeddings are opt-in (`with_embeddings`).
- `selected` and `aliases`: a model's prunable parameters, each once even when tied (GPT-2's lm_head and wte hold
  one Parameter), and every name a parameter goes by, so a mask keyed by any of them means the same weights.
- `data_free`: the all-ones input of SynFlow and of the path counts of panning.connectivity for any input kind:
  on a token model (one with an nn.Embedding) the input is token ids and every embedding outputs the sum of its
  rows, i.e. the embedding of an all-ones one-hot input ("ones through the embedding"); `rescaled_outputs`
  keeps the outputs of that pass in range by exact powers of two.

Nothing here runs per optimization step beyond `logits` (one isinstance test on a tensor).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

#: Module types whose `weight` is pruned by default (subclasses included).
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: nn.MultiheadAttention's own projection weights (out_proj is a Linear submodule of its own).
ATTENTION = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")

Filter = Callable[[str, nn.Module], bool]
Logits = Callable[[object], torch.Tensor]


def is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face's `Conv1D` (a Linear with a transposed (in, out) weight), recognized without importing
    transformers."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and \
        isinstance(module._parameters.get("weight"), nn.Parameter)


def parameter_names(module: nn.Module) -> tuple[str, ...]:
    """The attribute names of `module`'s prunable parameters when a filter selects it: the attention projections
    of nn.MultiheadAttention, else its `weight` (when it has one as a Parameter)."""
    if isinstance(module, nn.MultiheadAttention):
        return tuple(name for name in ATTENTION if isinstance(module._parameters.get(name), nn.Parameter))
    return ("weight",) if isinstance(module._parameters.get("weight"), nn.Parameter) else ()


def prunable(name: str, module: nn.Module) -> bool:
    """Default filter: Linear, Conv1d/2d/3d and their subclasses, nn.MultiheadAttention's projections and Hugging
    Face's Conv1D."""
    return isinstance(module, (*LAYERS, nn.MultiheadAttention)) or is_hf_conv1d(module)


def with_embeddings(name: str, module: nn.Module) -> bool:
    """The default filter plus every nn.Embedding."""
    return prunable(name, module) or isinstance(module, nn.Embedding)


def except_last(model: nn.Module, base: Filter = prunable) -> Filter:
    """A filter that keeps the last prunable layer (usually the classifier) dense."""
    names = [name for name, module in model.named_modules() if base(name, module)]
    last = names[-1] if names else None
    return lambda name, module: base(name, module) and name != last


def selected(model: nn.Module, include: Filter = prunable) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every parameter `include` selects, in module order; a parameter tied into several
    places comes once, under the name of the first selected place."""
    found, seen = [], set()
    for path, module in model.named_modules():
        if not include(path, module):
            continue
        for attr in parameter_names(module):
            param = module._parameters[attr]
            if id(param) not in seen:
                seen.add(id(param))
                found.append((f"{path}.{attr}" if path else attr, param))
    return found


def aliases(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every name of every parameter of `model` (a tied parameter under each of its names)."""
    return dict(model.named_parameters(remove_duplicate=False))


def others(model: nn.Module, params: list[nn.Parameter]) -> dict[str, nn.Parameter]:
    """The parameters of `model` other than `params` (compared by identity, so no alias of a tied one)."""
    ids = {id(p) for p in params}
    return {name: p for name, p in model.named_parameters() if id(p) not in ids}


def logits(output) -> torch.Tensor:
    """The class scores in a forward's output: the tensor itself, the first element of a tuple or list, or the
    `.logits` of an output object (Hugging Face)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    value = getattr(output, "logits", None)
    if isinstance(value, torch.Tensor):
        return value
    raise TypeError(f"model: its output ({type(output).__name__}) holds no logits; pass logits=fn that picks "
                    "them out of the output")


def takes_tokens(model: nn.Module) -> bool:
    """Whether the model reads token ids (it holds an nn.Embedding)."""
    return any(isinstance(m, nn.Embedding) for m in model.modules())


@contextlib.contextmanager
def data_free(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype,
              device: torch.device) -> Iterator[torch.Tensor]:
    """The data-free all-ones input (batch of one) of `model`; on a token model, zero token ids while every
    nn.Embedding outputs the sum of its rows (its response to an all-ones one-hot input) for the block."""
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if not embeddings:
        yield torch.ones((1, *input_shape), dtype=dtype, device=device)
        return

    def ones_through(module, inputs, output):
        return module.weight.sum(0).expand_as(output)

    handles = [m.register_forward_hook(ones_through) for m in embeddings]
    try:
        yield torch.zeros((1, *input_shape), dtype=torch.int64, device=device)
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def rescaled_outputs(model: nn.Module, layers: list[str], exponents: list[int], bound: int, *,
                     to: int = 0) -> Iterator[None]:
    """Forward hooks on the modules named `layers` that bring an output whose peak lies out of
    [2^(to - bound), 2^(to + bound)] (the first element of a tuple output, e.g. nn.MultiheadAttention's) to a peak
    in [2^(to - 1), 2^to) by dividing it by 2^e, and record e. The rescaled output is a copy: ldexp keeps its
    result for the backward, which an in-place activation after the layer would overwrite."""
    def hook(module, inputs, output):
        first = output[0] if isinstance(output, tuple) else output
        peak = float(first.detach().abs().amax())  # one read of the tensor; the tests below in Python
        if peak > 0 and not 2.0 ** (to - bound) <= peak <= 2.0 ** (to + bound):
            exponent = math.frexp(peak)[1] - to
            exponents.append(exponent)
            scaled = torch.ldexp(first, torch.tensor(-exponent, dtype=first.dtype, device=first.device)).clone()
            return (scaled, *output[1:]) if isinstance(output, tuple) else scaled
        return None

    handles = [model.get_submodule(name).register_forward_hook(hook) for name in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
