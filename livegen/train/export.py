"""Export a trained Char-RNN to the single-step ONNX graph the runtime plays, and quantize it.

The graph: (token int64 (B,), controls float32 (B, 32), h, c float32 (layers, B, hidden))
-> (logits float32 (B, 388), h_out, c_out), with B dynamic (1 when playing; larger when
evaluation scores many pieces at once). The weights are kept inside the .onnx file (the
model is far below protobuf's 2 GB limit), so one file carries the model and one hash
covers it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from livegen.generators.charrnn import ONNX_INPUTS, ONNX_OUTPUTS
from livegen.train.nets import CharRNN, CharRNNStep, NetShape

log = logging.getLogger(__name__)

OPSET = 18


def export_onnx(net: CharRNN, path: Path) -> None:
    """Write the single-step graph of `net` to `path` (weights inline)."""
    import onnx

    step = CharRNNStep(net.cpu().eval()).eval()
    shape = net.shape
    batch = 2  # not 1, so the exporter cannot specialise the batch dimension away
    example = (torch.zeros(batch, dtype=torch.int64),
               torch.zeros(batch, shape.control_size),
               torch.zeros(shape.layers, batch, shape.hidden_size),
               torch.zeros(shape.layers, batch, shape.hidden_size))
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    dynamic = {"token": {0: batch_dim}, "controls": {0: batch_dim}, "h": {1: batch_dim},
               "c": {1: batch_dim}}
    path.parent.mkdir(parents=True, exist_ok=True)
    # The exporter's optimizer logs every pass at INFO; its result is what matters here.
    for name in ("onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with torch.no_grad():
        program = torch.onnx.export(step, example, input_names=list(ONNX_INPUTS),
                                    output_names=list(ONNX_OUTPUTS), dynamic_shapes=dynamic,
                                    opset_version=OPSET, dynamo=True, external_data=False)
    program.optimize()
    model = program.model_proto
    onnx.checker.check_model(model)
    # Inline weights: one file, one hash (see the module docstring).
    onnx.save_model(model, str(path), save_as_external_data=False)
    log.info("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization (per-channel int8 weights; activations quantized per call)
    of every MatMul except the first LSTM layer's. That layer reads the embedding and the
    controls; quantizing it cost 1.9% held-out NLL, the other two MatMuls (the second layer
    and the output head) cost 0.1% and still halve the step time (README: The Char-RNN)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    first_layer = [n.name for n in graph.node
                   if n.op_type in ("MatMul", "Gemm") and "weights.0" in n.input]
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=first_layer)
    log.info("quantized %s (%.1f MB; kept in float: %s)", target, target.stat().st_size / 1e6,
             ", ".join(first_layer) or "nothing")


def torch_rollout(net: CharRNN, tokens: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """Logits (T, 388) of the training net fed `tokens` one step at a time from the zero
    state: the reference the ONNX graph must reproduce."""
    net = net.cpu().eval()
    state = None
    rows = []
    with torch.no_grad():
        for token, control in zip(tokens, controls, strict=True):
            logits, state = net(torch.tensor([[int(token)]]),
                                torch.from_numpy(np.asarray(control, np.float32))[None, None],
                                state)
            rows.append(logits[0, 0].numpy())
    return np.stack(rows)


def net_from_onnx(path: Path, shape: NetShape) -> CharRNN:
    """The torch training net holding the weights of an exported fp32 graph (its inverse):
    lets torch run the very model that ships, e.g. for `livegen bench charrnn`."""
    import onnx
    from onnx import numpy_helper

    weights = {i.name: numpy_helper.to_array(i)
               for i in onnx.load(str(path)).graph.initializer}
    # The exporter may rename the embedding table; it is the one (vocab, embedding) matrix.
    embedding = [w for name, w in weights.items()
                 if w.shape == (shape.vocab_size, shape.embedding_size)
                 and not name.startswith(("weights.", "head_"))]
    if len(embedding) != 1:
        raise ValueError(f"{path}: cannot tell the embedding table among the initializers")
    net = CharRNN(shape)
    inputs = shape.embedding_size + shape.control_size
    state = {"embedding.weight": embedding[0],
             "head.weight": weights["head_weight"].T, "head.bias": weights["head_bias"]}
    for layer in range(shape.layers):
        fused = weights[f"weights.{layer}"].T  # (4 hidden, in + hidden)
        width = inputs if layer == 0 else shape.hidden_size
        state[f"lstm.weight_ih_l{layer}"] = fused[:, :width]
        state[f"lstm.weight_hh_l{layer}"] = fused[:, width:]
        state[f"lstm.bias_ih_l{layer}"] = weights[f"biases.{layer}"]
        state[f"lstm.bias_hh_l{layer}"] = np.zeros_like(weights[f"biases.{layer}"])
    net.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in
                         state.items()})
    return net.eval()
