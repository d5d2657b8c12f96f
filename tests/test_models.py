"""Real model code on fastops: Hugging Face GPT-2, Llama, BERT, T5 and ViT (tiny random configs, built from config
objects, nothing downloaded) and a nanoGPT-style GPT, through ``convert(fuse=True)`` + ``fastops.enable()``.

For each model: at least 99% of the forward and of the backward GEMM FLOPs (attention's batched products aside,
which fastops does not claim) and every activation and loss call that fastops has a function for run on fastops
(fastops.coverage); logits, loss and every parameter gradient meet the accuracy rule against the float64 model with
torch's float32 run as the yardstick; and a few AdamW steps give a loss curve that meets the same rule."""

from __future__ import annotations

import copy
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from reference import assert_accurate
from test_mode import RecordOps
from torch import nn

import fastops
import fastops.nn as fnn
from fastops.nn import convert

transformers = pytest.importorskip("transformers")  # a test dependency (requirements-dev.txt)

VOCAB, SEQ, BATCH = 97, 16, 2


class NanoGPTBlock(nn.Module):
    """nanoGPT's pre-norm block: one fused QKV projection, causal scaled-dot-product attention, a GELU MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.c_attn, self.attn_proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(0.0))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.attn_proj(y)
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """A nanoGPT-style language model: learned positions, tied input/output embeddings, and nanoGPT's loss call
    (``F.cross_entropy(..., ignore_index=-1)``)."""

    def __init__(self, vocab: int = VOCAB, dim: int = 32, layers: int = 2, heads: int = 4, block: int = SEQ) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(block, dim)
        self.blocks = nn.ModuleList(NanoGPTBlock(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-1)
        return {"logits": logits, "loss": loss}


def _tokens(seed: int = 0):
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(seed))
    labels = ids.clone()
    labels[0, :3] = -100  # transformers' ignored positions
    return ids, labels


def gpt2():
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=0, eos_token_id=0)
    ids, labels = _tokens()
    return transformers.GPT2LMHeadModel(config), {"input_ids": ids, "labels": labels}


def llama():
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ,
                                      bos_token_id=0, eos_token_id=0)
    ids, labels = _tokens()
    return transformers.LlamaForCausalLM(config), {"input_ids": ids, "labels": labels}


def bert():
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=SEQ, pad_token_id=0)
    ids, labels = _tokens()
    return transformers.BertForMaskedLM(config), {"input_ids": ids, "labels": labels}


def t5():
    config = transformers.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    ids, labels = _tokens()
    return transformers.T5ForConditionalGeneration(config), {"input_ids": ids, "labels": labels}


def vit():
    config = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64, num_labels=5)
    gen = torch.Generator().manual_seed(0)
    pixels, labels = torch.randn(BATCH, 3, 16, 16, generator=gen), torch.randint(0, 5, (BATCH,), generator=gen)
    return transformers.ViTForImageClassification(config), {"pixel_values": pixels, "labels": labels}


def nanogpt():
    ids, labels = _tokens()
    labels[0, :3] = -1  # nanoGPT's ignore_index
    return NanoGPT(), {"idx": ids, "targets": labels}


MODELS = {"gpt2": gpt2, "llama": llama, "bert": bert, "t5": t5, "vit": vit, "nanogpt": nanogpt}

# What convert(fuse=True) does to each: the module swaps and fusions.
EXPECTED_CONVERSIONS = {
    "gpt2": ({"Conv1D": 8, "NewGELUActivation": 2, "Linear": 1}, {"LinearAct": 2}),
    "llama": ({"Linear": 15, "SiLUActivation": 2}, {"SwiGLU": 2}),
    "bert": ({"Linear": 14, "GELUActivation": 3}, {"LinearAct": 3}),
    # T5's MLP forward casts to wo's dtype under an `if`: not straight-line code, so nothing is fused.
    "t5": ({"Linear": 33, "ReLU": 4}, {}),
    "vit": ({"Linear": 13, "GELUActivation": 2}, {"LinearAct": 2}),
    "nanogpt": ({"Linear": 9, "GELU": 2}, {"LinearAct": 2}),
}


def _causal_lm_loss(logits, labels, vocab_size, ignore_index=-100, **kwargs):
    """transformers' ForCausalLMLoss (labels shifted left, -100 ignored, mean) without its ``logits.float()``, which in
    the float64 reference model would round the logits and the whole loss computation to float32."""
    shifted = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    return F.cross_entropy(logits.reshape(-1, vocab_size), shifted.reshape(-1), ignore_index=ignore_index)


def _models(name: str):
    """(torch model, fastops model, float64 torch model, inputs): the same weights, dropout off (eval)."""
    torch.manual_seed(0)
    model, inputs = MODELS[name]()
    model.eval()
    fast = convert(copy.deepcopy(model), fuse=True)
    reference = copy.deepcopy(model).double()
    if name in ("gpt2", "llama"):
        reference.loss_function = _causal_lm_loss
    return model, fast, reference, inputs


def _double(inputs: dict) -> dict:
    return {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}


def _logits_and_loss(model, inputs):
    out = model(**inputs)
    return out["logits"], out["loss"]


@pytest.mark.parametrize("name", MODELS)
def test_convert_swaps_and_fuses_the_model_zoo_layers(name):
    model, fast, _, _ = _models(name)
    assert (fast.fastops_swapped, fast.fastops_fused) == EXPECTED_CONVERSIONS[name]
    assert fast.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(fast.state_dict()[key], value), key
    for torch_module, fast_module in zip(model.modules(), fast.modules()):
        # Every converted module is still an instance of what it replaced, or of its torch.nn twin.
        if not isinstance(fast_module, nn.Identity):
            twin = getattr(nn, type(fast_module).__name__, type(torch_module))
            assert isinstance(fast_module, (type(torch_module), twin)), (type(torch_module), type(fast_module))


@pytest.mark.parametrize("name", MODELS)
def test_fastops_runs_the_gemms_activations_and_losses(name):
    _, fast, _, inputs = _models(name)
    with fastops.enable():
        report = fastops.coverage(fast, **inputs)
    for phase in ("forward", "backward"):
        gemm = report[phase]["gemm"]
        assert gemm["fastops_share"] >= 0.99, (phase, gemm, str(report))
        for kind in ("gemm", "activation", "loss"):
            assert report[phase][kind]["torch_calls_fastops_has"] == 0, (phase, kind, str(report))
    assert report["forward"]["loss"]["fastops_calls"] >= 1 and report["forward"]["loss"]["torch_calls"] == 0


@pytest.mark.parametrize("name", MODELS)
def test_logits_loss_and_gradients_meet_the_accuracy_rule(name):
    model, fast, reference, inputs = _models(name)
    with fastops.enable():
        logits, loss = _logits_and_loss(fast, inputs)
        loss.backward()
    native_logits, native_loss = _logits_and_loss(model, inputs)
    native_loss.backward()
    ref_logits, ref_loss = _logits_and_loss(reference, _double(inputs))
    ref_loss.backward()
    assert_accurate(logits, native_logits, ref_logits, what="logits")
    assert_accurate(loss, native_loss, ref_loss, what="loss")
    fast_params, ref_params = dict(fast.named_parameters()), dict(reference.named_parameters())
    for key, p in model.named_parameters():
        if p.grad is None:
            assert fast_params[key].grad is None, key
            continue
        assert_accurate(fast_params[key].grad, p.grad, ref_params[key].grad, what=f"grad of {key}")


STEPS = 6


def _train(model, inputs, steps: int = STEPS) -> list[float]:
    # The models stay in eval mode: dropout's random masks would differ between the three runs.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = model(**inputs)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", MODELS)
def test_training_curve_meets_the_accuracy_rule(name):
    model, fast, reference, inputs = _models(name)
    with fastops.enable():
        curve = _train(fast, inputs)
    torch_curve = _train(model, inputs)
    ref_curve = _train(reference, _double(inputs))
    assert all(math.isfinite(v) for v in curve) and curve[-1] < curve[0]
    assert_accurate(torch.tensor(curve), torch.tensor(torch_curve), torch.tensor(ref_curve, dtype=torch.float64),
                    what="loss curve")


# ---- the examples' models ----

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import train_book_classifier
import train_gpt


@pytest.mark.parametrize("loss", [
    pytest.param("nll", marks=pytest.mark.skipif(not train_book_classifier.has_log_softmax_nll(),
                                                 reason="fastops.nn.LogSoftmax / NLLLoss have not landed yet")),
    "ce",
])
def test_book_classifier_trains_like_torch(loss):
    model = train_book_classifier.make_model(fnn, loss)
    twins = [nn.Linear, nn.Tanh, nn.Linear, nn.LogSoftmax][: len(model)]
    assert all(type(m).__module__.startswith("fastops.") and isinstance(m, t) for m, t in zip(model, twins))
    curve, accuracy = train_book_classifier.train(fnn, loss, epochs=3)
    torch_curve, torch_accuracy = train_book_classifier.train(nn, loss, epochs=3)
    ref_curve, _ = train_book_classifier.train(nn, loss, epochs=3, dtype=torch.float64)
    assert accuracy >= 0.8 and abs(accuracy - torch_accuracy) <= 0.01
    assert_accurate(torch.tensor(curve), torch.tensor(torch_curve), torch.tensor(ref_curve, dtype=torch.float64),
                    what="loss curve")
    report = train_book_classifier.coverage_report(loss)
    for phase in ("forward", "backward"):
        for kind in ("gemm", "activation", "loss"):
            # cross_entropy writes its gradient in the forward: for an upstream gradient of 1 its backward runs no op
            nothing_ran = (phase, kind) == ("backward", "loss") and report[phase][kind]["fastops_calls"] == 0
            assert report[phase][kind]["torch_calls"] == 0 and (nothing_ran or report[phase][kind]["fastops_share"] == 1.0)


def test_gpt_example_trains_like_torch():
    data, chars = train_gpt.load_text(train_gpt.DEFAULT_TEXT)
    torch_model = train_gpt.make_model(len(chars))
    model = convert(copy.deepcopy(torch_model), fuse=True)
    reference = copy.deepcopy(torch_model).double()
    reference.loss_function = _causal_lm_loss
    curve = train_gpt.train(model, data, steps=5, use_fastops=True)
    torch_curve = train_gpt.train(torch_model, data, steps=5, use_fastops=False)
    ref_curve = train_gpt.train(reference, data, steps=5, use_fastops=False)
    assert curve[-1] < curve[0]
    assert_accurate(torch.tensor(curve), torch.tensor(torch_curve), torch.tensor(ref_curve, dtype=torch.float64),
                    what="loss curve")


def test_gpt_example_runs(capsys):
    assert train_gpt.main(["--steps", "4", "--sample", "10"]) == 0
    out = capsys.readouterr().out
    assert "fastops coverage of GPT2LMHeadModel" in out and "100.0%" in out and "the fastops GPT writes" in out


# ---- convert(fuse=True) details ----


class GatedMLP(nn.Module):
    """Llama's MLP shape with a tanh GELU: fuses to GeGLU."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(8, 16, bias=False), nn.Linear(8, 16), nn.Linear(16, 8)
        self.act, self.drop = nn.GELU(approximate="tanh"), nn.Dropout(0.0)

    def forward(self, x):
        return self.drop(self.down(self.up(x) * self.act(self.gate(x))))


class Branchy(nn.Module):
    """act(fc(x)), but under a branch: one trace does not show every call, so it is not fused."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act = nn.Linear(8, 8), nn.ReLU()

    def forward(self, x):
        h = self.act(self.fc(x))
        if h.shape[0] > 100:
            h = self.act(h)
        return h


class Reused(nn.Module):
    """fc's output is used twice: act cannot be folded into fc."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act = nn.Linear(8, 8), nn.SiLU()

    def forward(self, x):
        h = self.fc(x)
        return self.act(h) + h


def test_fuse_rewrites_only_what_the_structure_shows():
    assert convert(GatedMLP(), fuse=True).fastops_fused == {"GeGLU": 1}
    assert convert(Branchy(), fuse=True).fastops_fused == {}
    assert convert(Reused(), fuse=True).fastops_fused == {}
    shared = nn.GELU()
    model = nn.Sequential(nn.Linear(8, 8), shared, nn.Linear(8, 8), shared)  # one activation module used twice
    convert(model, fuse=True)
    assert model.fastops_swapped == {"Linear": 2, "GELU": 2} and model.fastops_fused == {}
    assert type(model[1]) is fnn.GELU and model[1] is model[3]  # still one module, now fastops'


def test_fused_modules_run_the_fused_ops_and_survive_copy_pickle_and_compile(tmp_path):
    torch.manual_seed(0)
    model, x = GatedMLP(), torch.randn(3, 8)
    fused = convert(copy.deepcopy(model), fuse=True)
    with RecordOps() as ops:
        out = fused(x)
    assert "geglu" in ops.fastops
    ref = copy.deepcopy(model).double()(x.double())
    assert_accurate(out, model(x), ref)
    for clone in (copy.deepcopy(fused), _pickled(fused, tmp_path)):
        torch.testing.assert_close(clone(x), out, rtol=0, atol=0)
        assert clone.forward.func is fused.forward.func and clone.forward.args[0] is clone
    torch._dynamo.reset()
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), out, rtol=0, atol=0)


def test_converted_gpt2_pickles(tmp_path):
    _, fast, _, inputs = _models("gpt2")
    clone = _pickled(fast, tmp_path)
    assert type(clone.transformer.h[0].mlp.c_fc) is type(fast.transformer.h[0].mlp.c_fc)
    assert isinstance(clone.transformer.h[0].mlp.c_fc, transformers.pytorch_utils.Conv1D)
    torch.testing.assert_close(clone(**inputs).logits, fast(**inputs).logits, rtol=0, atol=0)


def _pickled(model, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(model, path)
    return torch.load(path, weights_only=False)


# transformers' activation names whose class convert() turns into a fastops module; the others stay as they are
# (quick_gelu, gelu_10's clipping, relu2, laplace: no fastops math for them; mish until fastops.nn.Mish lands).
CONVERTED_ACTIVATIONS = ("gelu", "gelu_python", "gelu_new", "gelu_fast", "gelu_accurate", "gelu_pytorch_tanh",
                         "gelu_python_tanh", "silu", "swish", "relu", "sigmoid", "tanh", "leaky_relu")
KEPT_ACTIVATIONS = ("quick_gelu", "gelu_10", "relu2", "laplace", "linear")


@pytest.mark.parametrize("name", CONVERTED_ACTIVATIONS + KEPT_ACTIVATIONS)
def test_transformers_activations_convert_where_fastops_has_the_math(name):
    act = transformers.activations.ACT2FN[name]
    model = convert(nn.Sequential(copy.deepcopy(act)))
    if name in KEPT_ACTIVATIONS:
        assert type(model[0]) is type(act) and model.fastops_swapped == {}
        return
    assert type(model[0]).__module__ == "fastops.nn.activations" and isinstance(model[0], getattr(nn, type(model[0]).__name__))
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64).reshape(7, 143)
    xf = x.float().requires_grad_()
    out, native = model(xf), act(xf)
    assert_accurate(out, native, act(x.requires_grad_()))
    grads = [torch.autograd.grad(y.sum(), z)[0] for y, z in ((out, xf), (native, xf))]
    ref = torch.autograd.grad(act(x).sum(), x)[0]
    assert_accurate(grads[0], grads[1], ref, what="gradient")
