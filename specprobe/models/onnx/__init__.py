"""ONNX graphs as torch modules, checked against onnxruntime, then measured.

An ONNX file holds a graph of operators and its weights (initializers).
:class:`~specprobe.models.onnx.graph.OnnxModule` runs that graph with torch operators, the
floating-point initializers as trainable ``nn.Parameter``s, so autograd (and therefore
``specprobe.measure``) sees the same function of the same parameters.
:func:`~specprobe.models.onnx.graph.load_onnx` converts a file and checks the converted
module against onnxruntime on the user's inputs, reporting the largest deviation; a
mismatch or an operator outside :data:`~specprobe.models.onnx.ops.SUPPORTED_OPS` is a
clear error.

Why not onnx2torch: it imports torchvision at import time (for two detection operators),
and torchvision's wheels are tied to one torch build; an extra of ours should not pull a
second torch. The converter here covers the operators of MLPs, CNNs and exported
transformer language models (GPT-2, Llama, GPT-NeoX from either torch.onnx exporter); it
is tested against onnxruntime. A graph with an ``input_ids`` input and no ``targets`` is
measured as a causal LM (:class:`~specprobe.models.onnx.batch.GraphCausalLM` with the
causal-LM adapter).

Inputs and targets come from an ``.npz`` or ``.pt`` file (see
:func:`~specprobe.models.onnx.batch.load_arrays`). Requires the ``onnx`` extra:
``pip install "specprobe[onnx]"`` (onnx, onnxruntime).

Modules: ``ops`` (the operators, as torch functions), ``graph`` (the graph as an
``nn.Module``, checked against onnxruntime), ``batch`` (the inputs file, the batch and
adapter for ``specprobe.measure``).
"""
