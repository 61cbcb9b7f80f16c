"""The reference engine: the bundle's PyTorch networks, wrapped to exactly the graphs of streamrec.core.graphs."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch

from streamrec.core.bundle import Bundle
from streamrec.core.graphs import graph_metadata, graph_module, graph_spec
from streamrec.engines.base import EngineBase, check_inputs, log_io

log = logging.getLogger(__name__)


class TorchEngine(EngineBase):
    """One network of a bundle in eager PyTorch (FP32), on `device` ("cpu" or "cuda")."""

    backend = "torch"

    def __init__(self, bundle: Bundle, kind: str, device: str = "cpu") -> None:
        self.kind, self.device = kind, torch.device(device)
        spec = graph_spec(bundle, kind)
        self._inputs, self._outputs = spec.inputs, spec.outputs
        self.metadata = {**graph_metadata(bundle, kind), "precision": "fp32", "device": str(self.device)}
        self._module = graph_module(bundle, kind).to(self.device)
        log_io(log, self.backend, kind, self._inputs, self._outputs, str(self.device))

    @torch.inference_mode()
    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self.kind, self._inputs, inputs)
        args = [torch.as_tensor(np.asarray(inputs[s.name], dtype=s.dtype), device=self.device) for s in self._inputs]
        result = self._module(*args)
        result = result if isinstance(result, tuple) else (result,)
        return {s.name: r.float().cpu().numpy() for s, r in zip(self._outputs, result)}

    def close(self) -> None:
        self._module = None
