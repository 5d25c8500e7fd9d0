"""The precision policy (convis_jax/models/precision.py, docs/guides/precision.md), read
off the programs as JAX writes them and as XLA compiles them.

Under bfloat16 every matrix and attention product of the towers must take bfloat16
operands and return float32 (the form bfloat16 units run natively), and nothing of the
sweep after the encoder (similarities, ranks, subtree minima, cells) may hold a bfloat16
value. Products are checked in both programs: the written one says what the code asks
for, the compiled one what runs (XLA's CPU backend compiles a product with a bfloat16
result as float32 conversions around a float32 product, the slow form this policy
replaced). Each check is also run on a deliberately wrong program, to show that it
fails.

The rest of the suite runs float32 (tests/conftest.py sets CONVIS_JAX_DTYPE); here every
load names its dtype.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convis_jax.errors import InputError
from convis_jax.models import clip, precision, siglip
from convis_jax.models.loading import load_clip, load_model
from convis_jax.models.precision import Precision, device_precision, resolve_dtype

# ------------------------------------------------------------------ reading HLO

# A product of the towers is one whose op_name lies inside a Flax method of the two-tower
# modules (`CLIP.image_features`, `SIGLIP.text_features`, ...); OpenCLIP runs as CLIP.
_TOWER = re.compile(r"\b(?:CLIP|SIGLIP)\.\w+")
_DEFINITION = re.compile(r"%?([\w.\-]+) = (\w+)\[([\d,]*)\]")
_PARAMETER = re.compile(r"([\w.\-]+): (\w+)\[([\d,]*)\]")
_PRODUCT = re.compile(r"%?([\w.\-]+) = (\w+)\[[^\s]*\s+(dot|convolution)\(([^)]*)\)(.*)$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


@dataclass(frozen=True)
class Product:
    """One dot or convolution of an HLO module.

    Attributes:
        operands, result: element types ("bf16", "f32", ...).
        vector: a dot with an operand whose free (neither batch nor contracted) size is 1:
            a matrix-vector product.
        op_name: where JAX wrote it (empty when XLA made it up).
    """

    name: str
    kind: str
    operands: tuple[str, ...]
    result: str
    vector: bool
    op_name: str

    @property
    def in_tower(self) -> bool:
        return bool(_TOWER.search(self.op_name))


def _dims(attributes: str, key: str) -> set[int]:
    match = re.search(key + r"=\{([\d,]*)\}", attributes)
    return {int(d) for d in match.group(1).split(",") if d} if match else set()


def products(hlo: str) -> list[Product]:
    """Every dot and convolution of an HLO module's text, fused computations included."""
    shapes = {}  # instruction or parameter name -> (element type, dims)
    for line in hlo.splitlines():
        if line.rstrip().endswith("{") and "->" in line:  # a computation's header
            pairs = _PARAMETER.findall(line.split("->")[0])
        else:
            match = _DEFINITION.match(line.strip().removeprefix("ROOT "))
            pairs = [match.groups()] if match else []
        for name, kind, dims in pairs:
            shapes[name] = (kind, tuple(int(d) for d in dims.split(",") if d))
    found = []
    for line in hlo.splitlines():
        match = _PRODUCT.search(line)
        if match is None:
            continue
        name, result, kind, operands, attributes = match.groups()
        operands = [shapes.get(o.strip().lstrip("%"), ("?", ())) for o in operands.split(",")]
        vector = kind == "dot" and any(
            np.prod([n for axis, n in enumerate(dims)
                     if axis not in _dims(attributes, f"{side}_batch_dims")
                     | _dims(attributes, f"{side}_contracting_dims")]) == 1
            for side, (_, dims) in zip(("lhs", "rhs"), operands))
        op_name = _OP_NAME.search(attributes)
        found.append(Product(name, kind, tuple(t for t, _ in operands), result, bool(vector),
                             op_name.group(1) if op_name else ""))
    return found


def lowered_and_compiled(fn, *args) -> tuple[list[Product], list[Product]]:
    """The products of fn(*args) as JAX wrote them, and as XLA compiled them for this device."""
    lowered = jax.jit(fn).lower(*args)
    return (products(lowered.as_text(dialect="hlo", debug_info=True)),
            products(lowered.compile().as_text()))


def product_problems(found: list[Product], tower_operands: str) -> list[str]:
    """Products that break the policy: in the towers, operands of `tower_operands` ("bf16"
    or "f32") and a float32 result; everywhere else (the sweep) float32 throughout."""
    problems = []
    for p in found:
        want = tower_operands if p.in_tower else "f32"
        if set(p.operands) != {want} or p.result != "f32":
            where = p.op_name.split("/")[-2:] if p.op_name else [p.name]
            problems.append(f"{'/'.join(where)}: {p.kind}({', '.join(p.operands)}) -> {p.result}")
    return problems


def matrix_products(found: list[Product]) -> list[Product]:
    """The products a bfloat16 unit speeds up. XLA's CPU backend runs a matrix-vector
    product (SigLIP's one-query pooling head) in float32 on the bfloat16-rounded values:
    the same numbers, memory-bound either way."""
    return [p for p in found if not p.vector]


def _equations(jaxpr, scope: str = ""):
    """(equation, its full name stack) of a jaxpr and of the jaxprs nested in it (jit, scan,
    ...), whose name stacks are relative to the equation that holds them."""
    for eqn in jaxpr.eqns:
        here = "/".join(filter(None, (scope, str(eqn.source_info.name_stack))))
        yield eqn, here
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner, here)


def bfloat16_outside_towers(fn, *args) -> list[str]:
    """Operations outside the towers' modules that produce a bfloat16 value, from fn's jaxpr."""
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    return [f"{eqn.primitive.name} at {scope or 'top level'}"
            for eqn, scope in _equations(jaxpr) if not _TOWER.search(scope)
            and any(getattr(v.aval, "dtype", None) == jnp.bfloat16 for v in eqn.outvars)]


# ------------------------------------------------------------------ the towers


def expected_products(family: str, layers: int, tower: str) -> int:
    """Dots per example: 8 a block (q, k, v, two attention products, out, fc1, fc2) plus
    CLIP's patch embedding and projection, or SigLIP's patch embedding and pooling head
    (in-projections, two attention products, out, fc1, fc2), or a text projection/head."""
    extra = {("clip", "image"): 2, ("clip", "text"): 1,
             ("siglip", "image"): 1 + 8, ("siglip", "text"): 1}[family, tower]
    return 8 * layers + extra


def tower_programs(model):
    """(tower, fn, args) of both towers of a loaded model, as the sweep and the bank call them."""
    size = model.image_size
    pixels = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3, size, size)), jnp.float32)
    ids = jnp.asarray(model.tokenize(["a photo of a cat", "a dog"]).input_ids, jnp.int32)
    architecture = siglip if model.family == "siglip" else clip
    texts = lambda params, x: architecture.encode_texts(params, model.config, x)
    return [("image", model.encoder.embed_images, (model.params, pixels)),
            ("text", texts, (model.params, ids))]


@pytest.fixture(scope="module")
def tower_folders(tmp_path_factory, tiny_checkpoint):
    """family -> a tiny random checkpoint folder of each family."""
    from convis_jax.testing import make_siglip_checkpoint
    from tests.checkpoints import open_clip_reference, write_open_clip_folder
    from tests.models.test_openclip import cfg

    siglip_folder = tmp_path_factory.mktemp("siglip")
    make_siglip_checkpoint(siglip_folder)
    open_cfg = cfg()
    open_folder = write_open_clip_folder(tmp_path_factory.mktemp("open_clip"), open_cfg,
                                         open_clip_reference(open_cfg, seed=1).state_dict())
    return {"clip": tiny_checkpoint[0], "siglip": siglip_folder, "open_clip": open_folder}


@pytest.mark.parametrize("family", ["clip", "open_clip", "siglip"])
def test_bfloat16_towers_multiply_bfloat16_into_float32(tower_folders, family):
    model = load_model(tower_folders[family], dtype="bfloat16")
    assert model.family == family and model.dtype == jnp.bfloat16
    architecture = "siglip" if family == "siglip" else "clip"
    for tower, fn, args in tower_programs(model):
        written, compiled = lowered_and_compiled(fn, *args)
        layers = getattr(model.config, tower if tower == "text" else "vision").num_hidden_layers
        assert sum(p.in_tower for p in written) == expected_products(architecture, layers, tower), \
            [p.op_name for p in written]
        assert product_problems(written, "bf16") == [], (family, tower)
        assert product_problems(matrix_products(compiled), "bf16") == [], (family, tower)
        assert sum(p.in_tower and p.operands == ("bf16", "bf16") for p in compiled) >= 8 * layers
        assert bfloat16_outside_towers(fn, *args) == []
        assert fn(*args).dtype == jnp.float32


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_float32_towers_stay_float32(tower_folders, family):
    model = load_model(tower_folders[family], dtype="float32")
    for tower, fn, args in tower_programs(model):
        for found in lowered_and_compiled(fn, *args):
            assert found and product_problems(found, "f32") == [], (family, tower)


def _bfloat16_result(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision)


def test_the_check_fails_on_products_with_bfloat16_results(tower_folders, monkeypatch):
    """The form this policy replaced (bfloat16 operands and result) is caught: XLA's CPU
    backend compiles it as conversions around a float32 product."""
    model = load_model(tower_folders["clip"], dtype="bfloat16")
    monkeypatch.setattr(precision, "dot_general", _bfloat16_result)
    monkeypatch.setattr(precision, "einsum", lambda spec, a, b, dtype: jnp.einsum(
        spec, a.astype(dtype), b.astype(dtype)))
    monkeypatch.setattr(precision, "matmul", lambda x, w, dtype: x.astype(dtype) @ w.astype(dtype))
    (_, fn, args), _ = tower_programs(model)
    written, compiled = lowered_and_compiled(fn, *args)
    assert len(product_problems(written, "bf16")) == len([p for p in written if p.in_tower])
    problems = product_problems(matrix_products(compiled), "bf16")
    # Every Dense and attention product of the two blocks, and the projection.
    assert len(problems) >= 8 * model.config.vision.num_hidden_layers, problems


# ------------------------------------------------------------------ the sweep


@dataclass(frozen=True)
class RoundedEmbeddings:
    """A wrong encoder: the unit embeddings handed to the sweep rounded to bfloat16."""

    embed: object

    def __call__(self, params, pixel_values):
        return self.embed(params, pixel_values).astype(jnp.bfloat16)


def sweep_program(model, embed=None):
    """(fn, args) of the occlusion sweep (`kernels.sweep.Sweep`'s settings and kernel) of one
    image over a 24-synset bank, stride 64; `embed` replaces the encoder's `embed_images`."""
    import dataclasses

    from convis_jax.core.windows import pad_images
    from convis_jax.kernels.occlusion import occlusion_cells
    from convis_jax.kernels.sweep import ConceptRequest, Sweep

    encoder = model.encoder
    if embed is not None:
        encoder = dataclasses.replace(encoder, embed_images=embed)
    sweep = Sweep.create(encoder, num_rows=24, config=model.config, stride=64,
                         padding="constant", chunk=16)
    image = np.random.default_rng(1).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    padded = jnp.asarray(pad_images(image, sweep.grid.padding, "constant"))
    bank = np.random.default_rng(2).normal(size=(24, model.embedding_dim)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    request = ConceptRequest.from_subtrees([f"s{i}" for i in range(24)], np.arange(24),
                                           np.arange(25), np.arange(24))
    members, segments, k = request.padded()
    fn = lambda *a: occlusion_cells(*a, spec=sweep.spec, num_concepts=k)
    return fn, (model.params, padded, jnp.asarray(bank), jnp.asarray(members),
                jnp.asarray(segments))


def test_bfloat16_sweep_encodes_in_bfloat16_and_ranks_in_float32(tiny_checkpoint):
    model = load_clip(tiny_checkpoint[0], dtype="bfloat16")
    fn, args = sweep_program(model)
    written, compiled = lowered_and_compiled(fn, *args)
    tower = [p for p in written if p.in_tower]
    assert len(tower) == expected_products("clip", model.config.vision.num_hidden_layers,
                                           "image")
    # Outside the tower: the resize's two products and the similarities, float32.
    assert len(written) > len(tower)
    assert product_problems(written, "bf16") == []
    assert product_problems(matrix_products(compiled), "bf16") == []
    assert bfloat16_outside_towers(fn, *args) == []
    assert fn(*args).dtype == jnp.float32


def test_the_check_fails_on_a_sweep_that_ranks_bfloat16(tiny_checkpoint):
    model = load_clip(tiny_checkpoint[0], dtype="bfloat16")
    # Embeddings rounded to bfloat16 on their way to the similarities.
    fn, args = sweep_program(model, RoundedEmbeddings(model.encoder.embed_images))
    assert any(p.startswith("convert_element_type") for p in bfloat16_outside_towers(fn, *args))
    # And a bfloat16 bank: similarities, and the sort behind the ranks, in bfloat16.
    args = args[:2] + (args[2].astype(jnp.bfloat16),) + args[3:]
    found = bfloat16_outside_towers(fn, *args)
    assert any(p.startswith("dot_general") for p in found), found
    assert any(p.startswith("sort") for p in found), found
    # (XLA compiles that bfloat16 product as float32 between conversions, so it is the
    # written program that shows it.)
    written, _ = lowered_and_compiled(fn, *args)
    assert any(p.endswith("-> bf16") for p in product_problems(written, "bf16"))


# ------------------------------------------------------------------ agreement


def test_bfloat16_maps_agree_with_float32_on_scenes():
    """All concepts of the bundled model on rendered scenes: bfloat16 maps follow float32
    maps (the full-size measurement: benchmarks/bench_precision.py)."""
    import convis_jax as cj
    from convis_jax.scenes import render_scene

    photos = [render_scene(seed, size=224, n_objects=(2, 3)).image for seed in range(3)]
    cells = {}
    for dtype in ("float32", "bfloat16"):
        convis = cj.ConVis(cj.load_clip(None, dtype=dtype), progress=False)
        cells[dtype] = np.asarray(convis.occlusion_cells(photos), np.float64)
    a, b = (c.reshape(-1, c.shape[-2] * c.shape[-1]) for c in cells.values())
    assert not np.array_equal(a, b)  # the bfloat16 sweep did run in bfloat16
    varied = (np.ptp(a, axis=1) > 0) & (np.ptp(b, axis=1) > 0)
    a = a[varied] - a[varied].mean(1, keepdims=True)
    b = b[varied] - b[varied].mean(1, keepdims=True)
    correlation = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    assert len(correlation) > 100
    assert np.median(correlation) >= 0.999 and np.percentile(correlation, 10) >= 0.99, \
        (np.median(correlation), np.percentile(correlation, 10))


# ------------------------------------------------------------------ choosing the precision


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 avx2 {flags}\n\n")
    return path


def test_the_device_decides_when_no_dtype_is_named(tmp_path, monkeypatch):
    assert device_precision("cpu", _cpuinfo(tmp_path, "avx512f avx512_bf16")) == \
        Precision("bfloat16", "auto: cpu with avx512_bf16")
    assert device_precision("cpu", _cpuinfo(tmp_path, "amx_bf16 amx_tile")).dtype == "bfloat16"
    assert device_precision("cpu", _cpuinfo(tmp_path, "avx512f")) == \
        Precision("float32", "auto: cpu without bfloat16 units")
    assert device_precision("cpu", tmp_path / "absent") .dtype == "float32"
    assert device_precision("gpu").dtype == device_precision("tpu").dtype == "bfloat16"
    monkeypatch.delenv(precision.ENV_VAR)
    assert resolve_dtype(None) == resolve_dtype("auto") == device_precision()
    assert resolve_dtype("float32") == Precision("float32", "asked")
    monkeypatch.setenv(precision.ENV_VAR, "bfloat16")
    assert resolve_dtype(None) == Precision("bfloat16", "$CONVIS_JAX_DTYPE")
    assert resolve_dtype("float32").dtype == "float32"  # a named dtype wins
    monkeypatch.setenv(precision.ENV_VAR, "float16")
    with pytest.raises(InputError, match="CONVIS_JAX_DTYPE"):
        resolve_dtype(None)
    with pytest.raises(InputError, match="'float16'"):
        resolve_dtype("float16")


def test_a_load_reports_its_precision(tiny_checkpoint, monkeypatch):
    monkeypatch.delenv(precision.ENV_VAR)
    chosen = device_precision()
    model = load_clip(tiny_checkpoint[0])
    assert model.dtype == jnp.dtype(chosen.dtype) and model.precision == str(chosen)
    assert f"precision='{chosen}'" in repr(model)
    assert load_clip(tiny_checkpoint[0], dtype="float32").precision == "float32 (asked)"
    monkeypatch.setenv(precision.ENV_VAR, "float32")
    assert load_clip(tiny_checkpoint[0]).precision == "float32 ($CONVIS_JAX_DTYPE)"
