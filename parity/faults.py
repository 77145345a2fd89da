"""Real faults injected into real artifacts, to prove that a gate can fail.

A check that cannot fail is a defect: each gate in parity has a test that breaks an
artifact the way deployments break (a perturbed weight, a wrong epsilon, a wrong
resize) and expects the verdict to name the layer where it was broken.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from parity import lazy
from parity.backends.litert.internals import ops_details
from parity.backends.onnxruntime.runner import Scope, torch_scope
from parity.errors import TapError


def perturb_onnx_conv(
    source: Path,
    target: Path,
    module: str,
    relative_noise: float = 0.01,
    seed: int = 0,
    scope_of: Callable[[Any], Scope] = torch_scope,
) -> str:
    """Copy ``source`` to ``target`` with noise added to the first Conv inside ``module``.

    The noise is Gaussian with ``relative_noise`` times the weight's standard deviation;
    the perturbed weight gets its own initializer, so weights shared with other nodes
    stay intact. Returns the name of the perturbed node.
    """
    onnx = lazy.require("onnx")
    from onnx import numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    aliases = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    for node in graph.node:
        if node.op_type == "Conv" and module in scope_of(node):
            name = node.input[1]
            while name not in initializers and name in aliases:
                name = aliases[name]
            weight = numpy_helper.to_array(initializers[name])
            rng = np.random.default_rng(seed)
            noise = rng.standard_normal(weight.shape) * weight.std() * relative_noise
            new_name = f"{name}.perturbed"
            graph.initializer.append(
                numpy_helper.from_array((weight + noise).astype(weight.dtype), new_name)
            )
            node.input[1] = new_name
            onnx.save(model, str(target))
            return str(node.name)
    raise TapError(f"{source}: no Conv node inside module '{module}'")


def perturb_torch_conv(
    module: Any, path: str, relative_noise: float = 0.01, seed: int = 0
) -> tuple[Any, str]:
    """A copy of ``module`` with noise added to the weight of the first Conv inside ``path``.

    The same fault as :func:`perturb_onnx_conv`, made in the torch module itself (before it
    is compiled, moved or autocast by a torch variant). Returns the copy and the name of
    the perturbed conv.
    """
    torch = lazy.torch()
    broken = copy.deepcopy(module)
    for name, layer in broken.named_modules():
        inside = name == path or name.startswith(path + ".")
        if inside and isinstance(layer, torch.nn.Conv2d):
            weight = layer.weight.detach().numpy()
            rng = np.random.default_rng(seed)
            noise = rng.standard_normal(weight.shape) * weight.std() * relative_noise
            with torch.no_grad():
                layer.weight.add_(torch.from_numpy(noise.astype(weight.dtype)))
            return broken, name
    raise TapError(f"no Conv2d inside module '{path}'")


def scale_tflite_conv(source: Path, target: Path, scope: str, factor: float = 1.01) -> str:
    """Copy ``source`` to ``target`` with the weights of the first CONV_2D whose output name
    contains ``scope`` scaled by ``factor`` (the bytes of the weight buffer, in place).

    A float32 weight's bytes are stored as they are in the flatbuffer, so they are found
    (exactly once) and replaced; returns the perturbed op's output tensor name.
    """
    interpreter_module = lazy.require("ai_edge_litert.interpreter")
    interpreter = interpreter_module.Interpreter(model_path=str(source))
    interpreter.allocate_tensors()
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    content = source.read_bytes()
    for op in ops_details(interpreter):
        output = names[int(op["outputs"][0])]
        if op["op_name"] == "CONV_2D" and scope in output:
            weight = interpreter.get_tensor(int(op["inputs"][1]))
            if weight.dtype != np.float32:
                raise TapError(f"{source}: conv '{output}' has {weight.dtype} weights, not float32")
            old = weight.tobytes()
            if content.count(old) != 1:
                raise TapError(f"{source}: the weights of '{output}' are not stored exactly once")
            new = (weight * np.float32(factor)).astype(np.float32).tobytes()
            target.write_bytes(content.replace(old, new))
            return str(output)
    raise TapError(f"{source}: no CONV_2D whose output name contains '{scope}'")
