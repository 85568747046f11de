"""The Audio Spectrogram Transformer (AST): load once, classify a query, score mixture windows.

Windows run at their own length, not padded to the checkpoint's 1024 frames. AST is a ViT over
16x16 patches of the (frames, 128) log-mel fbank with strides 10, so its patch grid is
``F x T = 12 x 101`` for 1024 frames and its learned position embeddings have shape
``(1, 2 + F*T, hidden)``: two prefix tokens (CLS, distillation) and the patch grid laid out
frequency-major (index ``2 + f*T + t``, as ``Conv2d(...).flatten(2)`` produces it). A window of
``T' < T`` patch columns gets the same two prefix embeddings and, for each frequency row, the
first ``T'`` time columns — exactly the embeddings those patches would have had at the start of a
1024-frame input — so one 1 s window costs ~110 tokens instead of 1214 (an O(tokens²) saving in
attention, O(tokens) in the MLPs). The cut is done per forward inside a drop-in replacement of
the embeddings module that shares the pretrained parameters, so the weights are never modified
and any length from 16 frames up to ``max_length`` works (1024 frames gives the stock output).

The query is classified the same way, at its own length (1-3 s, not padded to 1024 frames);
queries longer than ``max_length`` frames (10.24 s) are cut to their first ``max_length`` frames,
like ``ASTFeatureExtractor`` does.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from .batching import BatchStats, ForwardBatcher
from .errors import ModelError, ParamError
from .features import AST_MEAN, AST_STD, ast_fbank, ast_num_frames
from .types import Classification, WindowScores

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms Kaldi window at 16 kHz
FRAME_SHIFT = 160  # 10 ms
MAX_BATCH = 64  # windows per forward: bounds activation memory for long mixtures


_OFFLINE_HINT = (
    "To use it offline, download it once with `hf download {model}` (the Hugging Face CLI, "
    "installed with sourcesep; it then loads from the cache with --offline), or save it with "
    "`save_pretrained(DIR)` and pass --model DIR; or run without an AST with --model none."
)
_DIR_HINT = (
    "Pass a folder written by `save_pretrained` (config.json and the weights), a Hugging Face "
    "model id, or --model none to run without an AST."
)


def frames_for(seconds: float) -> int:
    """Number of AST fbank frames (25 ms window, 10 ms shift, snip_edges) in ``seconds`` at 16 kHz."""
    return ast_num_frames(int(round(seconds * SAMPLE_RATE)))


def cut_position_embeddings(pos: torch.Tensor, n_freq: int, n_time: int, t_keep: int) -> torch.Tensor:
    """Position embeddings for an input with ``t_keep`` patch columns instead of ``n_time``.

    pos: (1, 2 + n_freq*n_time, H) pretrained embeddings (2 prefix tokens, then the patch grid
    frequency-major). Returns (1, 2 + n_freq*t_keep, H): the prefix tokens and, for each frequency
    row, its first ``t_keep`` time columns, flattened frequency-major again.
    """
    if not 1 <= t_keep <= n_time:
        raise ValueError(f"t_keep must be in [1, {n_time}], got {t_keep}")
    if t_keep == n_time:
        return pos
    hidden = pos.shape[-1]
    grid = pos[:, 2:].reshape(1, n_freq, n_time, hidden)[:, :, :t_keep]
    return torch.cat((pos[:, :2], grid.reshape(1, n_freq * t_keep, hidden)), dim=1)


class _AnyLengthEmbeddings(nn.Module):
    """Drop-in for ``ASTEmbeddings`` that accepts any frame count in [patch_size, max_length].

    Holds the very same parameter objects as the module it replaces (same state-dict keys), and
    cuts the position embeddings per call; nothing is mutated, so every length shares one model.
    """

    def __init__(self, emb: nn.Module, config: Any):
        super().__init__()
        self.cls_token = emb.cls_token
        self.distillation_token = emb.distillation_token
        self.patch_embeddings = emb.patch_embeddings
        self.position_embeddings = emb.position_embeddings
        self.dropout = emb.dropout
        self.config = config
        self.n_freq = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
        self.n_time = (config.max_length - config.patch_size) // config.time_stride + 1

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        batch = input_values.shape[0]
        patches = self.patch_embeddings(input_values)  # (B, n_freq * T', H)
        pos = cut_position_embeddings(
            self.position_embeddings, self.n_freq, self.n_time, patches.shape[1] // self.n_freq
        )
        x = torch.cat(
            (self.cls_token.expand(batch, -1, -1), self.distillation_token.expand(batch, -1, -1), patches),
            dim=1,
        )
        return self.dropout(x + pos.to(x.dtype))


@dataclass
class _Outputs:
    logits: torch.Tensor  # (B, C) float32
    pooled: torch.Tensor  # (B, H) float32: mean of CLS and distillation tokens, last layer
    tokens: torch.Tensor | None  # (B, 2 + F*T', H) float32 last-layer tokens, when asked for


def _env_offline() -> bool:
    return any(
        os.environ.get(k, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint (``HF_ENDPOINT``, default huggingface.co) accepts a TCP
    connection within ``timeout_s``. True when a proxy is configured (only the hub client can tell).

    The hub client retries unreachable hosts with backoff for about half a minute before giving
    up; this answers in milliseconds when the name does not resolve or the port is closed.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _looks_like_path(model: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else that names a folder is a path."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model


def _hub_revision(model_id: str, config: Any) -> str | None:
    """Commit hash of the cached snapshot the model loaded from (read from the cache path)."""
    rev = getattr(config, "_commit_hash", None)  # transformers < 5 records it on the config
    if rev:
        return str(rev)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_id, "config.json")
    except Exception:
        return None
    if isinstance(cached, str):
        parts = Path(cached).parts
        if "snapshots" in parts and parts.index("snapshots") + 1 < len(parts):
            return parts[parts.index("snapshots") + 1]
    return None


PRECISIONS = ("auto", "fp32", "bf16", "int8")

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_heap_for_tensors(mmap_threshold_mb: int = 32, trim_threshold_mb: int = 512, top_pad_mb: int = 64) -> bool:
    """Tune glibc's allocator so the AST's activation tensors reuse heap memory (process-wide).

    Each forward allocates and frees several 1-13 MB activations per layer. By default glibc
    serves these with fresh ``mmap`` pages (or trims the heap after they are freed), so every
    forward pays a page fault per 4 KiB touched: ~15 % of a base-size AST window batch on 2
    cores. Serving blocks up to ``mmap_threshold_mb`` from the heap and keeping up to
    ``trim_threshold_mb`` of freed heap (plus ``top_pad_mb`` headroom) removes that cost; peak
    RSS is unchanged (freed memory is reused, not returned to the OS until it exceeds the trim
    threshold). Like ``torch.set_num_threads`` this affects the whole process. Returns False
    where it does not apply (not glibc, e.g. macOS or musl).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(
        mallopt(param, mb << 20) == 1
        for param, mb in ((_M_MMAP_THRESHOLD, mmap_threshold_mb), (_M_TRIM_THRESHOLD, trim_threshold_mb),
                          (_M_TOP_PAD, top_pad_mb))
    )


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU computes bf16 natively (x86 ``avx512_bf16`` or ``amx_bf16`` flags).

    ``cpuinfo``: the text of /proc/cpuinfo (read when None; False where it cannot be read, e.g.
    not Linux). Without these instructions bf16 autocast is emulated and slower than fp32.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` → ``"bf16"`` where ``device`` computes bf16 natively, else ``"fp32"``.

    CPU: the avx512_bf16/amx_bf16 flags (:func:`cpu_has_native_bf16`); CUDA:
    ``torch.cuda.is_bf16_supported()`` (compute capability ≥ 8.0). Other values are returned as
    given after validation (ParamError for unknown ones).
    """
    if precision not in PRECISIONS:
        raise ParamError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        with torch.cuda.device(device):
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cpu"``/``"cuda[:N]"`` as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ParamError(f"device must be auto, cpu or cuda[:N] (got {device!r}): {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} was requested but CUDA is not available; use --device cpu")
    if dev.type not in {"cpu", "cuda"}:
        raise ParamError(f"device must be auto, cpu or cuda[:N] (got {device!r})")
    return dev


class AstModel:
    """A loaded AST, reused across calls. Build it with :meth:`load` (or :meth:`wrap`).

    Attributes: ``model_id`` (id or directory as given), ``revision`` (hub commit hash when known,
    else None), ``labels`` (class names by id), ``hidden_size``, ``device`` (torch.device),
    ``precision`` ("fp32" | "bf16" | "int8"), ``max_frames`` (the checkpoint's max_length).

    All methods run under ``torch.inference_mode`` with the model in eval mode; they do not change
    the model, so one instance can serve many calls (one at a time per instance on CPU is
    fastest: torch already uses all ``threads`` inside each forward). Threads sharing one
    instance on a GPU can have their window and query forwards merged into one batch with
    :meth:`enable_batching`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        model_id: str,
        revision: str | None,
        device: torch.device,
        precision: str,
        mean: float = AST_MEAN,
        std: float = AST_STD,
        do_normalize: bool = True,
    ):
        cfg = model.config
        self._model = model
        self._base = getattr(model, model.base_model_prefix)
        self._cfg = cfg
        self.model_id = model_id
        self.revision = revision
        self.device = device
        self.precision = precision
        self.labels: list[str] = [str(cfg.id2label[i]) for i in range(cfg.num_labels)]
        self.hidden_size: int = int(cfg.hidden_size)
        self.num_mel_bins: int = int(cfg.num_mel_bins)
        self.max_frames: int = int(cfg.max_length)
        self.patch_size: int = int(cfg.patch_size)
        self.time_stride: int = int(cfg.time_stride)
        self.n_freq_patches: int = (cfg.num_mel_bins - cfg.patch_size) // cfg.frequency_stride + 1
        self._mean, self._std, self._do_normalize = float(mean), float(std), bool(do_normalize)
        self.batcher: ForwardBatcher | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(
        cls,
        model: str,
        *,
        offline: bool = False,
        device: str = "auto",
        precision: str = "fp32",
        threads: int = 2,
    ) -> "AstModel":
        """Load ``ASTForAudioClassification`` from a Hugging Face id or a ``save_pretrained`` directory.

        ``offline`` (or ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set in the environment) loads
        with ``local_files_only=True``: the model must be in the local cache or a directory.
        ``threads`` calls ``torch.set_num_threads``, which is process-wide: it also applies to
        everything else this process runs with torch. On CPU it also tunes glibc's allocator for
        tensor-sized blocks (:func:`keep_heap_for_tensors`, also process-wide). The feature
        extractor's config (mean, std, do_normalize) is read when the checkpoint has one;
        otherwise the AudioSet defaults apply.
        ``precision`` "auto" resolves to bf16 where the device computes it natively, else fp32
        (:func:`resolve_precision`); the resolved value is ``self.precision``.
        Raises :class:`ModelError` (saying how to provide the model offline) when it cannot load.
        """
        dev = resolve_device(device)
        precision = resolve_precision(precision, dev)
        torch.set_num_threads(int(threads))
        if dev.type == "cpu":
            keep_heap_for_tensors()
        model = str(model)
        local_only = bool(offline) or _env_offline()
        if model.strip().lower() == "none":
            raise ModelError("model 'none' means no AST: do not load one (use the query detector)")
        path = Path(model).expanduser()
        hint = _DIR_HINT if path.is_dir() or _looks_like_path(model) else _OFFLINE_HINT.format(model=model)
        if path.exists() and not path.is_dir():
            raise ModelError(f"{model}: not a model directory (expected a save_pretrained folder). {_DIR_HINT}")
        if not path.is_dir() and _looks_like_path(model):
            raise ModelError(f"{model}: model directory not found. {hint}")
        source = str(path) if path.is_dir() else model

        from transformers import ASTFeatureExtractor, ASTForAudioClassification
        from transformers.utils import logging as hf_logging

        unreachable = not local_only and not path.is_dir() and not hub_reachable()
        if unreachable:  # a cached copy still loads; without one, fail now rather than after retries
            local_only = True

        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # keep "weights not used"-style chatter and bars off stderr
        hf_logging.disable_progress_bar()
        try:
            try:
                net = ASTForAudioClassification.from_pretrained(source, local_files_only=local_only)
            except Exception as e:  # OSError, HF validation errors, connection errors, bad files
                where = ("from the cache (the hub is unreachable)" if unreachable
                         else "offline (local files only)" if local_only else "from the hub or cache")
                first = str(e).strip().splitlines()[0].rstrip(".") if str(e).strip() else e.__class__.__name__
                raise ModelError(f"cannot load AST model '{model}' {where}: {first}. {hint}") from None
            try:  # only the config values: building the extractor itself is not needed
                fe_dict, _ = ASTFeatureExtractor.get_feature_extractor_dict(source, local_files_only=True)
            except Exception:  # checkpoints without preprocessor_config.json use the defaults
                fe_dict = {}
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        fe_cfg = {k: fe_dict[k] for k in ("mean", "std", "do_normalize") if k in fe_dict}
        revision = None if path.is_dir() else _hub_revision(model, net.config)
        return cls.wrap(net, model_id=model, revision=revision, device=str(dev), precision=precision, **fe_cfg)

    @classmethod
    def wrap(
        cls,
        net: nn.Module,
        *,
        model_id: str = "in-memory",
        revision: str | None = None,
        device: str = "auto",
        precision: str = "fp32",
        mean: float = AST_MEAN,
        std: float = AST_STD,
        do_normalize: bool = True,
    ) -> "AstModel":
        """Wrap an already built ``ASTForAudioClassification`` (e.g. a random base-size one for
        benchmarks). Installs the any-length embeddings, moves it to ``device``, sets eval mode and
        applies ``precision`` (int8 = dynamic quantisation of the Linear layers, CPU only; "auto" =
        bf16 where the device computes it natively, else fp32)."""
        dev = resolve_device(device)
        precision = resolve_precision(precision, dev)
        if precision == "int8" and dev.type != "cpu":
            raise ParamError("precision int8 (dynamic quantisation) runs on CPU only; use fp32 or bf16 on CUDA")
        base = getattr(net, net.base_model_prefix)
        if not isinstance(base.embeddings, _AnyLengthEmbeddings):
            base.embeddings = _AnyLengthEmbeddings(base.embeddings, net.config)
        net = net.float().to(dev).eval()
        if precision == "bf16":
            _cast_matmul_weights(net, torch.bfloat16)
        if precision == "int8":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao deprecation notices; the API still works
                net = torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)
        if precision != "fp32":
            _own_float32_memory(net)
        for p in net.parameters():
            p.requires_grad_(False)
        return cls(net, model_id=model_id, revision=revision, device=dev, precision=precision,
                   mean=mean, std=std, do_normalize=do_normalize)

    # ------------------------------------------------------------------ features and forward
    def fbank(self, waves: torch.Tensor, n_frames: int) -> torch.Tensor:
        """(B, n) 16 kHz waves → normalised (B, n_frames, num_mel_bins) AST input on ``device``."""
        return ast_fbank(
            waves, sr=SAMPLE_RATE, num_mel_bins=self.num_mel_bins, target_frames=n_frames,
            mean=self._mean, std=self._std, normalize=self._do_normalize,
        )

    def _input_frames(self, n_samples: int) -> int:
        """Frames fed to the model for ``n_samples`` of audio: at least one patch, at most max_length."""
        return int(min(max(frames_for(n_samples / SAMPLE_RATE), self.patch_size), self.max_frames))

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(self, feats: torch.Tensor, want_tokens: bool = False) -> _Outputs:
        """One forward of (B, frames, mels) features at their own length (no padding to 1024)."""
        with self._autocast():
            out = self._base(input_values=feats)
            logits = self._model.classifier(out.pooler_output)
        tokens = out.last_hidden_state.float() if want_tokens else None
        return _Outputs(logits=logits.float(), pooled=out.pooler_output.float(), tokens=tokens)

    @torch.inference_mode()
    def _logits_pooled(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, frames, mels) → (logits (B, C), pooled (B, H)); the forward a batcher merges."""
        o = self._forward(feats)
        return o.logits, o.pooled

    # ------------------------------------------------------------------ batching across callers
    def enable_batching(self, wait_ms: float, max_batch: int = MAX_BATCH) -> ForwardBatcher:
        """Merge the window and query forwards of concurrent callers (threads) into one forward.

        A caller's forward waits up to ``wait_ms`` milliseconds for other callers whose inputs
        have the same frame count, then runs once for all of them (at most ``max_batch`` windows;
        see :class:`~sourcesep.batching.ForwardBatcher`). Each caller gets exactly its own rows:
        results equal the unbatched ones up to float rounding. Worth it on a GPU shared by
        several jobs; on CPU it only adds the wait. :meth:`patch_similarity` is not batched.
        Replaces any batcher enabled before (calls in flight finish with the old one).
        """
        self.batcher = ForwardBatcher(self._logits_pooled, wait_ms=wait_ms, max_batch=max_batch)
        return self.batcher

    def disable_batching(self) -> None:
        """Back to one forward per caller (calls in flight finish with the batcher they have)."""
        self.batcher = None

    def batching_stats(self) -> BatchStats | None:
        """The batcher's counters (forwards run, windows, requests merged), or None when off."""
        batcher = self.batcher
        return None if batcher is None else batcher.stats()

    def _as_tensor(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
        return t.to(self.device)

    @torch.inference_mode()
    def logits_and_embeddings(self, waves: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Equal-length 16 kHz clips (B, n) → (logits (B, C), embeddings (B, H)), float32.

        All clips run in batched forwards of at most ``MAX_BATCH`` at their own frame count
        (``frames_for(n / 16000)``, at least one patch, at most ``max_length``). With
        :meth:`enable_batching`, each forward may also carry other callers' clips.
        """
        w = self._as_tensor(waves)
        if w.ndim != 2 or w.shape[0] == 0:
            raise ValueError(f"waves must be (B, n) with B ≥ 1, got shape {tuple(w.shape)}")
        n_frames = self._input_frames(w.shape[1])
        forward = self._logits_pooled if self.batcher is None else self.batcher.run  # read once
        logits, pooled = [], []
        for i in range(0, w.shape[0], MAX_BATCH):
            lg, pl = forward(self.fbank(w[i:i + MAX_BATCH], n_frames))
            logits.append(lg)
            pooled.append(pl)
        return torch.cat(logits).cpu().numpy(), torch.cat(pooled).cpu().numpy()

    # ------------------------------------------------------------------ public API
    def classify(self, query: np.ndarray) -> Classification:
        """Classify a query (n,) at 16 kHz at its own length (not padded to 1024 frames).

        Class probabilities are sigmoids of the logits (AudioSet is multi-label). ``embedding`` is
        the pooled output (hidden,): the mean of the CLS and distillation tokens of the last layer.
        """
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.size == 0:
            raise ValueError("query is empty")
        if q.size < FRAME_LENGTH:  # shorter than one fbank frame: pad so a frame exists
            q = np.pad(q, (0, FRAME_LENGTH - q.size))
        logits, emb = self.logits_and_embeddings(q[None])
        probs = 1.0 / (1.0 + np.exp(-logits[0].astype(np.float64)))
        order = np.argsort(-probs, kind="stable")
        top = [{"id": int(i), "name": self.labels[i], "p": round(float(probs[i]), 5)} for i in order[:5]]
        best = int(order[0])
        return Classification(
            available=True,
            class_id=best,
            class_name=self.labels[best],
            confidence=float(probs[best]),
            top5=top,
            embedding=emb[0].astype(np.float32),
        )

    def window_starts(self, n_samples: int, window_sec: float, hop_sec: float) -> np.ndarray:
        """Start sample of each window: every ``hop`` until one reaches the end (the last may be partial)."""
        win, hop = int(round(window_sec * SAMPLE_RATE)), max(1, int(round(hop_sec * SAMPLE_RATE)))
        n_win = 1 if n_samples <= win else 1 + int(np.ceil((n_samples - win) / hop))
        return np.arange(n_win, dtype=np.int64) * hop

    def score_windows(
        self, mix: np.ndarray, query_cls: Classification, window_sec: float, hop_sec: float
    ) -> WindowScores:
        """Score sliding windows of ``mix`` (n,) 16 kHz against the query's class and embedding.

        Windows of ``window_sec`` every ``hop_sec``; the last partial window is zero-padded to
        full length. All windows go through batched forwards at the window's own frame count.
        probs (W,) = sigmoid(logits)[:, query class]; cosine (W,) = cosine similarity of each
        window's pooled embedding to ``query_cls.embedding``; embeddings (W, hidden).
        """
        if not query_cls.available or query_cls.class_id is None or query_cls.embedding is None:
            raise ValueError("score_windows needs a classification from this model (class id and embedding)")
        x = np.asarray(mix, dtype=np.float32).reshape(-1)
        win, hop = int(round(window_sec * SAMPLE_RATE)), max(1, int(round(hop_sec * SAMPLE_RATE)))
        starts = self.window_starts(x.size, window_sec, hop_sec)
        w = self._as_tensor(x)
        need = int(starts[-1]) + win
        if need > w.numel():
            w = torch.nn.functional.pad(w, (0, need - w.numel()))
        windows = w.unfold(0, win, hop)[: starts.size].contiguous()  # (W, win)
        logits, emb = self.logits_and_embeddings(windows)
        probs = 1.0 / (1.0 + np.exp(-logits[:, query_cls.class_id].astype(np.float64)))
        return WindowScores(
            starts_s=starts / SAMPLE_RATE,
            window_sec=float(window_sec),
            probs=probs.astype(np.float32),
            cosine=_cosine(emb, query_cls.embedding),
            embeddings=emb,
        )

    @torch.inference_mode()
    def patch_similarity(self, x: np.ndarray, query_emb: np.ndarray) -> np.ndarray:
        """Cosine of each last-layer patch token of ``x`` (n,) 16 kHz to ``query_emb`` (hidden,).

        Returns (F_p, T_p) on the patch grid: F_p = 12 rows from low to high mel frequency, T_p =
        (frames - 16) // 10 + 1 columns; column t covers fbank frames [10t, 10t + 16), i.e. it is
        centred at about ``(10 t + 7.5) * 0.01 + 0.0125`` s. Inputs longer than ``max_length``
        frames run as consecutive pieces of whole patch columns (batched), so the grid is seamless.
        """
        q = np.asarray(query_emb, dtype=np.float32).reshape(-1)
        xs = np.asarray(x, dtype=np.float32).reshape(-1)
        if xs.size < FRAME_LENGTH:
            xs = np.pad(xs, (0, FRAME_LENGTH - xs.size))
        n_frames = max(frames_for(xs.size / SAMPLE_RATE), self.patch_size)
        feats = self.fbank(self._as_tensor(xs)[None], n_frames)[0]  # (frames, mels)
        t_total = (n_frames - self.patch_size) // self.time_stride + 1
        t_max = (self.max_frames - self.patch_size) // self.time_stride + 1
        piece_frames = self.patch_size + self.time_stride * (t_max - 1)
        step = self.time_stride * t_max  # next piece starts at the next patch column
        grids = []
        full = (n_frames - piece_frames) // step + 1 if n_frames >= piece_frames else 0
        if full:
            pieces = feats.unfold(0, piece_frames, step)[:full].transpose(1, 2)  # (P, frames, mels)
            for i in range(0, full, MAX_BATCH):
                grids.append(self._patch_grid(pieces[i:i + MAX_BATCH], q))
        done = full * t_max
        if done < t_total:
            rest = feats[done * self.time_stride:]
            grids.append(self._patch_grid(rest[None], q))
        sim = torch.cat([g.permute(1, 0, 2).reshape(self.n_freq_patches, -1) for g in grids], dim=1)
        return sim[:, :t_total].cpu().numpy().astype(np.float32)

    def _patch_grid(self, feats: torch.Tensor, q: np.ndarray) -> torch.Tensor:
        """(P, frames, mels) → cosine grid (P, F_p, T') of patch tokens to q."""
        tokens = self._forward(feats, want_tokens=True).tokens[:, 2:]  # (P, F*T', H)
        qt = torch.as_tensor(q, device=tokens.device)
        sim = torch.nn.functional.cosine_similarity(tokens, qt.view(1, 1, -1), dim=-1, eps=1e-8)
        return sim.view(feats.shape[0], self.n_freq_patches, -1)


def _cast_matmul_weights(net: nn.Module, dtype: torch.dtype) -> None:
    """Store the Linear and Conv2d parameters in ``dtype`` (in place).

    Under autocast these layers run in ``dtype`` anyway, and autocast would re-cast every fp32
    weight on every forward (~0.35 GB of memory traffic per forward for a base-size AST, i.e.
    ~30 % of a query's classification time) and keep both copies alive. Casting once gives the
    same numbers (the same round-to-nearest cast) and halves the weights' memory. LayerNorms,
    position embeddings and the prefix tokens stay float32 (autocast runs LayerNorm in float32).
    """
    for mod in net.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            mod.to(dtype)


def _own_float32_memory(net: nn.Module) -> None:
    """Give the float32 parameters and buffers left after a precision change their own memory.

    ``from_pretrained`` maps the safetensors file, and its tensors are views into that one
    mapping. Once the matmul weights are replaced (bf16 copies, int8 packed weights), the
    LayerNorms and embeddings left as views would keep the whole mapping, with every page read
    while converting, resident: ~320 MB of a base-size AST's RSS for ~10 MB of tensors.
    """
    with torch.no_grad():
        for t in (*net.parameters(), *net.buffers()):
            if t.dtype == torch.float32:
                t.data = t.data.clone()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of a (W, H) to b (H,) → (W,) float32."""
    a64, b64 = a.astype(np.float64), np.asarray(b, dtype=np.float64).reshape(-1)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64)
    return np.where(den > 0, a64 @ b64 / np.maximum(den, 1e-300), 0.0).astype(np.float32)
