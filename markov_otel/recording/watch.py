"""`recorder.watch(model)`: a torch module's gradients and parameters every N steps, from hooks,
as `wandb.watch` does.

Every `every`-th backward pass (gradients) or forward pass (parameters) of the module, each
parameter gives its L2 norm as a number (`gradients/<name>/norm`, `parameters/<name>/norm`) and
its values as a distribution (`gradients/<name>`, `parameters/<name>`: one ExponentialHistogram
point, bucketed off the training thread like any array given to add_record). They are recorded
at the step the loop's next record takes by default (the last record's + 1), without taking it,
so the training loop's own steps go on as they were.

The hooks cost a counter a pass between those steps; at those steps a copy of every parameter
(or gradient) to the CPU, which is what a histogram of it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from markov_otel.errors import ConfigError

LOGS = ("gradients", "parameters", "all")


class Watch:
    """The hooks of one watched module; `remove()` takes them off."""

    def __init__(
        self,
        model: Any,
        record: Callable[[dict[str, Any], int], None],
        next_step: Callable[[], int],
        every: int,
        log: str,
    ) -> None:
        if not hasattr(model, "named_parameters") or not hasattr(model, "register_forward_hook"):
            raise ConfigError(
                f"watch(model={type(model).__name__}) needs a torch.nn.Module, e.g. "
                "recorder.watch(model, every=100)"
            )
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"watch(every={every!r}) must be a positive int, e.g. every=100")
        if log not in LOGS:
            raise ConfigError(f"watch(log={log!r}) must be one of {', '.join(LOGS)}")
        self._record, self._next_step, self._every = record, next_step, every
        self._step = 0  # of the pass being watched: taken once, at its forward pass
        self._params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self._parameters = log in ("parameters", "all")
        self._passes = 0  # forward passes: a backward pass belongs to the last one
        self._handles: list[Any] = [model.register_forward_hook(self._after_forward)]
        if log in ("gradients", "all"):  # each gradient as autograd computes it
            for name, param in self._params:
                self._handles.append(param.register_hook(self._gradient_hook(name)))

    def remove(self) -> None:
        """Take the hooks off."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _due(self) -> bool:
        return (self._passes - 1) % self._every == 0

    def _after_forward(self, module: Any, inputs: Any, output: Any) -> None:
        self._passes += 1
        if not self._due():
            return
        self._step = self._next_step()  # before this pass records anything
        if self._parameters:
            record: dict[str, Any] = {}
            for name, param in self._params:
                record.update(_values("parameters", name, param))
            if record:
                self._record(record, self._step)

    def _gradient_hook(self, name: str) -> Callable[[Any], None]:
        def hook(grad: Any) -> None:
            if self._due() and grad is not None:
                self._record(_values("gradients", name, grad), self._step)

        return hook


def _values(kind: str, name: str, tensor: Any) -> dict[str, Any]:
    """A tensor's norm and (more than one element) its values: add_record copies them."""
    import torch

    values = tensor.detach()
    if values.numel() == 0:
        return {}
    with torch.no_grad():
        out: dict[str, Any] = {
            f"{kind}/{name}/norm": float(torch.linalg.vector_norm(values.float()))
        }
    if values.numel() > 1:
        out[f"{kind}/{name}"] = values
    return out
