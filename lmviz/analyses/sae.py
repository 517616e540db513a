"""Sparse autoencoders (SAEs) in SAELens's folder format: read, check, encode and decode.

An SAE rewrites one site's activation x (d_in numbers, here the residual
stream at a block's input or output) as a sparse sum of d_sae learned
directions, its *latents* (features):

    f = act(W_encᵀ (x − b_dec) + b_enc)        (d_sae,) mostly zeros        encode
    x̂ = W_decᵀ f + b_dec = Σ_j f_j · W_dec[j] + b_dec                          decode

The `− b_dec` is there when `apply_b_dec_to_input` (SAELens's default). The
activation `act` is the architecture's (what SAELens 5 and 6 compute):

- `standard`: ReLU(pre).
- `topk`: the k largest pre-activations, each through ReLU, all others 0. With
  `rescale_acts_by_decoder_norm`, pre is first multiplied by each latent's
  ‖W_dec[j]‖ and decode divides f by it again.
- `jumprelu`: ReLU(pre) where pre > threshold_j, else 0.

**The folder** holds `cfg.json` and `sae_weights.safetensors` with `W_enc`
(d_in, d_sae), `b_enc` (d_sae), `W_dec` (d_sae, d_in), `b_dec` (d_in) and,
for jumprelu, `threshold` (d_sae). Both generations of cfg.json are read:
SAELens 5 keeps `hook_name`, `hook_layer`, `activation_fn_str` and
`activation_fn_kwargs` ({"k": …} for topk) at the top; SAELens 6 keeps
`hook_name` in a `metadata` dict and `k` at the top. Weights are read with
safetensors only (never a pickle) and held in float32 whatever their stored
dtype. Sites: `blocks.{l}.hook_resid_pre` (block l's input, `hidden_states[l]`)
and `blocks.{l}.hook_resid_post` (its output, `hidden_states[l+1]`), the seam's
sites of the same names. Anything lmviz cannot apply exactly is refused in one
line naming the field: another hook, a head index, activation normalization,
a gated or other architecture, a fine-tuning scaling factor, weights of the
wrong shape or dtype.

`load(name_or_folder)` reads a folder, or an embedded SAE by name (under
lmviz/data/saes/). A latent's direct effect on the logits is its decoder row
through the final norm, held at a chosen final residual as direct logit
attribution holds it, and the unembedding: `latent_tokens`.
"""

from __future__ import annotations

import json
import numbers
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from lmviz.analyses import neurons
from lmviz.errors import LmvizError
from lmviz.model.frozen_norm import require_frozen
from lmviz.model.interventions import Site

SAES = Path(__file__).resolve().parent.parent / "data" / "saes"  # the embedded SAEs' folders
EMBEDDED = {"smollm2-135m-res8-topk": "smollm2-135m"}  # embedded SAE -> the model it reads
DEFAULT_SAE = "smollm2-135m-res8-topk"
ARCHITECTURES = ("standard", "topk", "jumprelu")
HOOKS = ("hook_resid_pre", "hook_resid_post")
CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
_HOOK = re.compile(r"blocks\.(\d+)\.(hook_resid_pre|hook_resid_post)")
_FLOATS = {"float16", "bfloat16", "float32", "float64", "float", "half", "double"}
_TENSORS = {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}


@dataclass(frozen=True, eq=False)
class Sae:
    """One SAE, checked and held in float32 on the CPU. Dimension names: d_in (the site's width), d_sae
    (latents). `encode` and `decode` take any leading dimensions."""

    name: str  # the embedded name, or the folder's name
    folder: Path
    hook: str  # the site it reads and writes: "blocks.8.hook_resid_pre"
    layer: int  # the block of `hook`
    d_in: int
    d_sae: int
    architecture: str  # "standard" | "topk" | "jumprelu"
    k: int | None  # topk: latents kept per position; None otherwise
    apply_b_dec_to_input: bool
    rescale_acts_by_decoder_norm: bool  # topk only
    W_enc: torch.Tensor  # (d_in, d_sae) float32
    b_enc: torch.Tensor  # (d_sae,)
    W_dec: torch.Tensor  # (d_sae, d_in)
    b_dec: torch.Tensor  # (d_in,)
    threshold: torch.Tensor | None  # (d_sae,) jumprelu only
    model_name: str | None  # the model the cfg says it was trained on, as its trainer named it
    stored_dtype: str  # the weights' dtype in the file ("float16", …)
    key: tuple  # (folder, cfg.json's and the weights' mtime and size): part of every cached result's key

    @property
    def site(self) -> Site:
        return Site(self.hook)

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """(…, d_in) -> (…, d_sae) float32: W_encᵀ (x − b_dec) + b_enc (without − b_dec when not
        apply_b_dec_to_input)."""
        x = x.detach().to(device="cpu", dtype=torch.float32)
        if x.shape[-1] != self.d_in:
            raise LmvizError(f"{self.name} reads {self.d_in} numbers per position, not {x.shape[-1]}.")
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(…, d_in) activations -> (…, d_sae) float32 latent activations (see the module docstring)."""
        pre = self.pre_activations(x)
        if self.architecture == "topk":
            if self.rescale_acts_by_decoder_norm:
                pre = pre * self.W_dec.norm(dim=-1)
            values, index = torch.topk(pre, self.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, index, values.relu())
        acts = pre.relu()
        if self.architecture == "jumprelu":
            acts = acts * (pre > self.threshold)
        return acts

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """(…, d_sae) latent activations -> (…, d_in) float32 reconstruction W_decᵀ f + b_dec."""
        f = f.detach().to(device="cpu", dtype=torch.float32)
        if f.shape[-1] != self.d_sae:
            raise LmvizError(f"{self.name} has {self.d_sae} latents, not {f.shape[-1]}.")
        if self.rescale_acts_by_decoder_norm:
            f = f / self.W_dec.norm(dim=-1)
        return f @ self.W_dec + self.b_dec

    def direction(self, latent: int) -> torch.Tensor:
        """(d_in,) float32: what one unit of `latent` adds to the reconstruction (its W_dec row, divided by its
        norm when the activations were rescaled by it)."""
        latent = self.check_latent(latent)
        row = self.W_dec[latent]
        return row / row.norm() if self.rescale_acts_by_decoder_norm else row

    def check_latent(self, latent) -> int:
        """A latent's id as an int, or LmvizError outside 0..d_sae-1."""
        whole = isinstance(latent, numbers.Integral) and not isinstance(latent, bool)
        if not whole or not 0 <= int(latent) < self.d_sae:
            raise LmvizError(f"Latent {latent!r} is outside {self.name}'s latents (0..{self.d_sae - 1}).")
        return int(latent)

    def check(self, lm) -> None:
        """LmvizError unless this SAE can read `lm`: its site exists there and is d_in wide."""
        if self.layer >= lm.n_layers:
            raise LmvizError(f"{self.name} reads {self.hook}, but {lm.name} has blocks 0..{lm.n_layers - 1}.")
        if self.d_in != lm.d_model:
            raise LmvizError(f"{self.name} reads {self.d_in} numbers per position (d_in), but {lm.name}'s residual "
                             f"stream has {lm.d_model} (d_model): it was trained on another model.")

    def describe(self) -> dict:
        """{"name", "folder", "hook", "d_in", "d_sae", "architecture", "k", "model_name"}: for --json and tables."""
        return {"name": self.name, "folder": str(self.folder), "hook": self.hook, "d_in": self.d_in,
                "d_sae": self.d_sae, "architecture": self.architecture, "k": self.k, "model_name": self.model_name}


# ---------------------------------------------------------------- reading a folder


def resolve(name_or_folder: str | Path) -> tuple[str, Path]:
    """(name, folder): an embedded SAE's name, or a folder (its name is the folder's)."""
    spec = str(name_or_folder).strip()
    if not spec:
        raise LmvizError(f"Name an SAE ({', '.join(EMBEDDED)}) or give its folder.")
    if spec in EMBEDDED:
        folder = SAES / spec
        if not (folder / CFG).is_file():
            raise LmvizError(f"The embedded SAE {spec} is not installed here ({folder} has no {CFG}): it is trained "
                             f"with `lmviz train-sae` and shipped in lmviz/data/saes.")
        return spec, folder
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise LmvizError(f"No SAE named '{spec}': use {', '.join(EMBEDDED)}, or a folder with {CFG} and {WEIGHTS} "
                         f"(SAELens's format).")
    return folder.resolve().name, folder.resolve()


_LOADED: dict[tuple, Sae] = {}
_LOADED_LOCK = threading.Lock()
_MAX_LOADED = 4


def load(name_or_folder: str | Path, lm=None) -> Sae:
    """The SAE in a folder, or an embedded one by name, checked (and against `lm` when given). Loaded once
    per version of its files: a folder rewritten is read again."""
    name, folder = resolve(name_or_folder)
    cfg_path, weights_path = folder / CFG, folder / WEIGHTS
    if not cfg_path.is_file():
        raise LmvizError(f"{folder} has no {CFG}: an SAE folder holds {CFG} and {WEIGHTS} (SAELens's format).")
    if not weights_path.is_file():
        others = sorted(p.name for p in folder.iterdir() if p.suffix in (".pt", ".pth", ".bin", ".ckpt", ".pkl"))
        if others:
            raise LmvizError(f"{folder} has {others[0]} but no {WEIGHTS}: lmviz reads SAE weights from safetensors "
                             "only (a pickled file can run code when loaded).")
        raise LmvizError(f"{folder} has no {WEIGHTS}: an SAE folder holds {CFG} and {WEIGHTS}.")
    stats = cfg_path.stat(), weights_path.stat()
    key = (str(folder), name) + tuple((s.st_mtime_ns, s.st_size) for s in stats)
    with _LOADED_LOCK:
        sae = _LOADED.get(key)
    if sae is None:
        sae = _read(name, folder, key)
        with _LOADED_LOCK:
            _LOADED[key] = sae
            while len(_LOADED) > _MAX_LOADED:
                del _LOADED[next(iter(_LOADED))]
    if lm is not None:
        sae.check(lm)
    return sae


def _read(name: str, folder: Path, key: tuple) -> Sae:
    where = f"{folder.name}/{CFG}"
    try:
        cfg = json.loads((folder / CFG).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LmvizError(f"{where} is not JSON ({error}).") from None
    if not isinstance(cfg, dict):
        raise LmvizError(f"{where} holds no JSON object.")
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}

    def field(*names: str, default=None):
        """A setting from the top level or the metadata dict (SAELens 5 or 6), checked to agree where both have it."""
        found = {}
        for place in (cfg, meta):
            for name_ in names:
                if name_ in place and place[name_] is not None:
                    found.setdefault(id(place), (name_, place[name_]))
        values = list(found.values())
        if len(values) == 2 and values[0][1] != values[1][1]:
            raise LmvizError(f"{where}: {values[0][0]} is {values[0][1]!r} at the top but {values[1][1]!r} in "
                             "metadata.")
        return values[0][1] if values else default

    def count(field_name: str, value) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LmvizError(f"{where}: {field_name} must be a positive whole number, not {value!r}.")
        return value

    d_in, d_sae = count("d_in", field("d_in")), count("d_sae", field("d_sae"))
    hook = field("hook_name", "hook_point")
    match = _HOOK.fullmatch(hook) if isinstance(hook, str) else None
    if match is None:
        raise LmvizError(f"{where}: hook_name {hook!r} is not a site lmviz reads SAEs at "
                         f"(blocks.L.hook_resid_pre or blocks.L.hook_resid_post).")
    layer = int(match[1])
    hook_layer = field("hook_layer", "hook_point_layer")
    if hook_layer is not None and hook_layer != layer:
        raise LmvizError(f"{where}: hook_layer {hook_layer!r} disagrees with hook_name {hook}.")
    if field("hook_head_index", "hook_point_head_index") is not None:
        raise LmvizError(f"{where}: hook_head_index is set; lmviz reads SAEs on the whole residual stream only.")
    normalize = field("normalize_activations", default="none")
    if normalize not in ("none", False):
        raise LmvizError(f"{where}: normalize_activations is {normalize!r}; lmviz applies SAEs without activation "
                         "normalization only ('none': fold the scale into the weights).")
    if field("reshape_activations", default="none") != "none":
        raise LmvizError(f"{where}: reshape_activations is {field('reshape_activations')!r}, not 'none'.")
    if field("finetuning_scaling_factor", default=False):
        raise LmvizError(f"{where}: finetuning_scaling_factor is set; lmviz does not apply a fine-tuning scale.")
    apply_b_dec = field("apply_b_dec_to_input", default=True)
    if not isinstance(apply_b_dec, bool):
        raise LmvizError(f"{where}: apply_b_dec_to_input must be true or false, not {apply_b_dec!r}.")
    dtype = field("dtype", default="float32")
    if not isinstance(dtype, str) or dtype.removeprefix("torch.") not in _FLOATS:
        raise LmvizError(f"{where}: dtype {dtype!r} is not a floating-point type lmviz reads.")

    architecture = field("architecture", default="standard")
    activation = field("activation_fn_str", "activation_fn")  # SAELens 5 only
    kwargs = field("activation_fn_kwargs", default={}) or {}
    if not isinstance(kwargs, dict):
        raise LmvizError(f"{where}: activation_fn_kwargs must be an object, not {kwargs!r}.")
    if architecture == "standard" and activation == "topk":  # SAELens 5: a standard SAE with a TopK activation
        architecture = "topk"
    if architecture not in ARCHITECTURES:
        raise LmvizError(f"{where}: architecture {architecture!r} is not one lmviz applies "
                         f"({', '.join(ARCHITECTURES)}).")
    if activation is not None and activation != ("topk" if architecture == "topk" else "relu"):
        raise LmvizError(f"{where}: activation_fn {activation!r} does not go with architecture {architecture!r} "
                         "(lmviz applies relu, or topk for a topk SAE).")
    k = None
    if architecture == "topk":
        k_top, k_kwargs = cfg.get("k"), kwargs.get("k")
        if k_top is not None and k_kwargs is not None and k_top != k_kwargs:
            raise LmvizError(f"{where}: k is {k_top!r} but activation_fn_kwargs.k is {k_kwargs!r}.")
        k = k_top if k_top is not None else k_kwargs
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d_sae:
            raise LmvizError(f"{where}: k must be a whole number from 1 to d_sae ({d_sae}) for a topk SAE, "
                             f"not {k!r}.")
    rescale = field("rescale_acts_by_decoder_norm", default=False)
    if not isinstance(rescale, bool) or (rescale and architecture != "topk"):
        raise LmvizError(f"{where}: rescale_acts_by_decoder_norm {rescale!r} applies to a topk SAE only.")

    tensors, stored = _weights(folder, d_in, d_sae, architecture)
    return Sae(name, folder, hook, layer, d_in, d_sae, architecture, k, apply_b_dec, rescale and architecture == "topk",
               tensors["W_enc"], tensors["b_enc"], tensors["W_dec"], tensors["b_dec"], tensors.get("threshold"),
               field("model_name"), stored, key)


def _weights(folder: Path, d_in: int, d_sae: int, architecture: str) -> tuple[dict[str, torch.Tensor], str]:
    """The weights as float32 tensors, each checked for its name, shape, dtype and finiteness."""
    from safetensors import SafetensorError, safe_open

    where = f"{folder.name}/{WEIGHTS}"
    try:
        with safe_open(str(folder / WEIGHTS), framework="pt", device="cpu") as file:
            raw = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, RuntimeError) as error:
        raise LmvizError(f"{where} is not a readable safetensors file ({str(error).splitlines()[0]}).") from None
    scaling = raw.pop("scaling_factor", None)  # SAELens wrote one of all ones for a while: harmless
    if scaling is not None and not bool((scaling == 1).all()):
        raise LmvizError(f"{where}: scaling_factor is not all ones; lmviz does not apply a fine-tuning scale.")
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if architecture == "jumprelu":
        shapes["threshold"] = (d_sae,)
    unknown = sorted(set(raw) - set(shapes))
    if unknown:
        raise LmvizError(f"{where}: {unknown[0]} is not a weight of a {architecture} SAE "
                         f"({', '.join(shapes)}); lmviz won't apply an SAE it only partly understands.")
    tensors, dtypes = {}, set()
    for name, shape in shapes.items():
        tensor = raw.get(name)
        if tensor is None:
            raise LmvizError(f"{where} has no {name}, which a {architecture} SAE needs.")
        if not tensor.is_floating_point():
            raise LmvizError(f"{where}: {name} is {str(tensor.dtype).removeprefix('torch.')}, not floating point.")
        if tuple(tensor.shape) != shape:
            raise LmvizError(f"{where}: {name} has shape {tuple(tensor.shape)}, not {shape} "
                             f"(d_in {d_in}, d_sae {d_sae} in {CFG}).")
        tensor = tensor.float()
        if not bool(torch.isfinite(tensor).all()):
            raise LmvizError(f"{where}: {name} holds NaN or infinite values (in float32).")
        tensors[name] = tensor.contiguous()
        dtypes.add(str(raw[name].dtype).removeprefix("torch."))
    return tensors, "/".join(sorted(dtypes))


# ---------------------------------------------------------------- what a latent writes


def latent_tokens(lm, sae: Sae, latents, residual: torch.Tensor, k: int = 10):
    """What one unit of a latent promotes and suppresses directly: `neurons.TokenEffects` for `latents` one id,
    a tuple of them (one per id) for a list of ids. Its decoder direction goes through the final norm held at
    `residual` (a final residual, the last block's output at a position, e.g. `Features.final_residuals[p]`)
    and the unembedding, as direct logit attribution computes a part's effect. The logit changes are per unit
    of activation at that position; with an RMSNorm or LayerNorm the ranking is the same at any position (the
    frozen scale is one positive number)."""
    sae.check(lm)
    one = isinstance(latents, numbers.Integral)
    ids = [latents] if one else list(latents)
    vectors = torch.stack([sae.direction(j) for j in ids]) if ids else torch.zeros(0, sae.d_in)  # (n, d_in)
    lm.require_vocabulary_head()
    frozen = require_frozen(lm.head.norm, residual.unsqueeze(0), "final norm", lm)
    effects = neurons.token_effects(lm, vectors, frozen, k)
    return effects[0] if one else effects
