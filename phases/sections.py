"""The config sections, one per phase (and their parts): frozen, typed, every field described and
range-checked. :mod:`phases.config` assembles them into the root and loads presets."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    # allow_inf_nan=False: "lr=.nan" fails as "Input should be a finite number" (NaN slips past
    # bounds with a misleading message, and "weight_decay=.inf" would pass a lower bound).
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# The master URL forms Spark accepts (SparkContext's master parsing), checked before a JVM starts.
_SPARK_MASTER = re.compile(
    r"local(?:\[(?:\*|[1-9]\d*)(?:,[1-9]\d*)?\])?"  # local, local[4], local[*], local[4,2] (with retries)
    r"|local-cluster\[[1-9]\d*,\s*[1-9]\d*,\s*[1-9]\d*\]"  # local-cluster[workers, cores, MiB]
    r"|spark://[^\s:/,]+:\d{1,5}(?:,[^\s:/,]+:\d{1,5})*"  # standalone, several masters with ZooKeeper HA
    r"|yarn|k8s://\S+|mesos://\S+"
)
# spark.driver.memory: a JVM size (plain number = MiB), as Spark's byteStringAsMb reads it.
_JVM_MEMORY = re.compile(r"[1-9]\d*(?:[kmgt]b?)?", re.IGNORECASE)


def check_spark_master(value: str) -> str:
    """``value`` if it is a Spark master URL, else a ValueError naming the forms (also for ``lifecycle dedup``)."""
    if not _SPARK_MASTER.fullmatch(value.strip()):
        raise ValueError(
            "not a Spark master URL; use local, local[N], local[*], local[N,F], spark://host:port[,host:port...], "
            "yarn, k8s://https://host:port or mesos://host:port"
        )
    return value.strip()


SourceKind = Literal["python_stdlib", "package_docs", "package_licenses", "jsonl", "parquet", "text"]


class SourceConfig(Section):
    """One named input source of the data phase."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$", description="Source name, used in counts and lineage.")
    kind: SourceKind = Field(description="Built-in corpus (python_stdlib, package_docs, package_licenses) or a file format.")
    path: str | None = Field(None, description="File, directory or glob Spark can read (file://, s3a://, hdfs://); for jsonl/parquet/text.")
    text_field: str = Field("text", description="Field holding the document text (jsonl/parquet).")
    id_field: str | None = Field("id", description="Field holding a stable id; derived from the text hash when absent.")
    weight: float = Field(1.0, gt=0, description="Mixture weight: the source's target share of documents is weight / sum(weights).")
    max_docs: int | None = Field(None, gt=0, description="Read at most this many documents (deterministic: by path order).")
    license: str = Field("unknown", description="Licence or notes tag carried into the manifest.")
    quality_filters: bool = Field(True, description="Apply the Gopher-style prose heuristics (turn off for code and licence texts).")

    @model_validator(mode="after")
    def _path_for_files(self) -> "SourceConfig":
        if self.kind in ("jsonl", "parquet", "text") and not self.path:
            raise ValueError(f"source {self.name!r} of kind {self.kind} needs a path")
        return self


class QualityConfig(Section):
    """Gopher-style heuristics (Rae et al. 2021); a document failing any one is filtered with its name."""

    min_words: int = Field(50, ge=0, description="Fewest words.")
    max_words: int = Field(100_000, gt=0, description="Most words.")
    min_mean_word_length: float = Field(3.0, ge=0, description="Shortest mean word length.")
    max_mean_word_length: float = Field(10.0, gt=0, description="Longest mean word length.")
    max_symbol_word_ratio: float = Field(0.1, ge=0, description="Most '#' and ellipses per word.")
    max_bullet_lines: float = Field(0.9, ge=0, le=1, description="Largest share of lines starting with a bullet.")
    max_ellipsis_lines: float = Field(0.3, ge=0, le=1, description="Largest share of lines ending with an ellipsis.")
    max_duplicate_line_fraction: float = Field(0.3, ge=0, le=1, description="Largest share of characters in repeated lines.")
    max_top_2gram: float = Field(0.20, ge=0, le=1, description="Largest character share of the most frequent word 2-gram.")
    max_top_3gram: float = Field(0.18, ge=0, le=1, description="... 3-gram.")
    max_top_4gram: float = Field(0.16, ge=0, le=1, description="... 4-gram.")
    max_dup_5gram: float = Field(0.15, ge=0, le=1, description="Largest character share in repeated word 5-grams.")
    max_dup_10gram: float = Field(0.10, ge=0, le=1, description="Largest character share in repeated word 10-grams.")


class NearDedupConfig(Section):
    """MinHash near-deduplication (datasketch-identical signatures), verified by exact Jaccard.

    The one parameters type of near-dedup: the pipeline's ``data.near_dedup`` section and the
    ``lifecycle dedup`` command's flags (derived from these fields) alike. An index keeps them.
    """

    enabled: bool = Field(True, description="Remove near-duplicates (one document kept per cluster: the smallest id).")
    threshold: float = Field(0.8, gt=0, lt=1, description="Exact Jaccard of word-n-gram sets at or above which two documents are duplicates.")
    num_perm: int = Field(128, ge=2, le=1024, description="MinHash permutations.")
    ngram: int = Field(5, ge=1, description="Words per shingle.")
    seed: int = Field(1, description="MinHash seed (datasketch's default is 1).")
    fn_weight: float = Field(
        0.99, gt=0, lt=1, description="Weight of missed pairs when choosing bands x rows (verification removes false candidates)."
    )
    bands: int | None = Field(None, ge=1, description="LSH bands; set with rows to override the choice from threshold and fn_weight.")
    rows: int | None = Field(None, ge=1, description="MinHash values per band; set with bands.")
    scheme: Literal["affine32", "legacy"] = Field(
        "affine32", description="Permutation scheme: datasketch 2.0's default (affine32) or its pre-2.0 one (legacy)."
    )
    hashing: Literal["token", "sha1"] = Field(
        "token",
        description="Shingle hash. token: ~8x faster, same quality (tests/benchmarks/results); "
        "sha1: datasketch's default, for signatures identical to MinHash(num_perm, seed).",
    )

    @model_validator(mode="after")
    def _banding(self) -> "NearDedupConfig":
        if (self.bands is None) != (self.rows is None):
            raise ValueError(
                f"set both bands and rows, or neither (then they follow threshold and fn_weight); got bands={self.bands}, rows={self.rows}"
            )
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows ({self.bands}*{self.rows}) exceeds num_perm ({self.num_perm}); lower one or raise num_perm")
        return self

    def banding(self) -> tuple[int, int]:
        """(bands, rows): the configured ones, else the recall-weighted choice for threshold and num_perm."""
        if self.bands is not None:
            return self.bands, self.rows
        from phases.data.dedup.minhash import optimal_bands

        return optimal_bands(self.threshold, self.num_perm, 1.0 - self.fn_weight, self.fn_weight)

    def signature_params(self) -> dict[str, Any]:
        """The fields that decide the result (``enabled`` does not): what an index is built with."""
        return self.model_dump(exclude={"enabled"})


class DataConfig(Section):
    """Phase 1: read, normalize, filter, deduplicate, mix and split the sources."""

    sources: tuple[SourceConfig, ...] = Field(min_length=1, description="Input sources, each with a mixture weight.")
    spark_master: str = Field(
        "local[*]", description="Spark master URL: local[*] embedded, spark://host:7077 for a cluster (also yarn, k8s://..., mesos://...)."
    )
    spark_driver_memory: str = Field("2g", description="spark.driver.memory for the embedded session: a JVM size such as 512m or 2g.")
    min_chars: int = Field(50, ge=0, description="Documents shorter than this (after normalization) are dropped as too_short.")
    max_chars: int = Field(200_000, gt=0, description="Documents longer than this are quarantined as too_long.")
    quality: QualityConfig = Field(QualityConfig(), description="Thresholds of the quality heuristics.")
    near_dedup: NearDedupConfig = Field(NearDedupConfig(), description="Near-duplicate removal.")
    dedup_index: bool = Field(
        True,
        description="Keep the near-deduplicated documents in an index under $LIFECYCLE_HOME/index/dedup/: a later run on sources "
        "that only grew deduplicates just the new documents against it (false: every run deduplicates everything).",
    )
    redact_pii: bool = Field(True, description="Replace e-mails, IP addresses, phone numbers and secrets with placeholders (phases/data/pii.py).")
    mix_by: Literal["documents", "chars"] = Field(
        "documents", description="Unit of the mixture weights (characters stand in for tokens before the tokenizer exists)."
    )
    max_epochs: float = Field(
        1.0, ge=1, description="Most times a scarce source may be repeated to reach its share (1 = down-sample the others instead)."
    )
    val_fraction: float = Field(0.05, gt=0, lt=0.5, description="Share of documents in the validation split (by id hash).")
    shards: int = Field(2, ge=1, le=4096, description="Parquet files per split.")
    seed: int = Field(0, description="Seed of the mixing sample.")

    @field_validator("spark_master")
    @classmethod
    def _spark_master(cls, v: str) -> str:
        return check_spark_master(v)

    @field_validator("spark_driver_memory", mode="before")
    @classmethod
    def _driver_memory(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)  # YAML reads 1024 as a number: MiB, as Spark does
        if not isinstance(v, str):
            return v  # the str field reports the wrong type
        if not _JVM_MEMORY.fullmatch(v.strip()):
            raise ValueError("not a JVM memory size; use digits with an optional k, m, g or t suffix (512m, 2g; a plain number is MiB)")
        return v.strip()

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        if self.min_chars >= self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})")
        return self


class ModelConfig(Section):
    """Phase 2: tokenizer, packed sequences and the architecture (explicit, a named size, or from a budget)."""

    vocab_size: int = Field(4096, ge=300, le=65535 * 4, description="BPE vocabulary size (>= 256 bytes + special tokens).")
    min_frequency: int = Field(2, ge=1, description="Minimum pair frequency for a BPE merge.")
    tokenizer_max_bytes: int = Field(20_000_000, gt=0, description="Train the tokenizer on at most this many bytes of text.")
    tokenizer_path: str | None = Field(None, description="Use this saved Hugging Face tokenizer instead of training one.")
    special_tokens: tuple[str, ...] = Field((), description="Extra special tokens beyond <|pad|>, <|bos|>, <|eos|>.")
    seq_len: int = Field(128, ge=8, description="Packed sequence length in tokens.")
    hidden_size: int = Field(128, ge=8, description="Transformer width.")
    num_layers: int = Field(2, ge=1, description="Number of decoder layers.")
    num_heads: int = Field(4, ge=1, description="Attention heads (hidden_size must divide by it).")
    intermediate_size: int = Field(352, ge=8, description="MLP width.")
    max_position_embeddings: int = Field(512, ge=8, description="Longest sequence the model supports (>= seq_len).")
    size: str | None = Field(None, description="A named size preset (tiny, mini, 20M, 60M, 124M, 350M, ...) replacing the shape fields.")
    budget_flops: float | None = Field(None, gt=0, description="Size the model for this training compute (Chinchilla or loss_law).")
    gpu_hours: float | None = Field(None, gt=0, description="Budget as GPU-hours of `gpu` at `mfu` (instead of budget_flops).")
    gpu: str = Field("H100", description="Target GPU for the plan: cpu, A100, H100, H200, L4, A10G, V100.")
    num_gpus: int = Field(1, ge=1, description="GPUs the plan assumes.")
    mfu: float = Field(0.4, gt=0, le=1, description="Model FLOPs utilisation the plan assumes.")
    loss_law: str | None = Field(None, description="JSON with a fitted L(N, D) = E + A/N^alpha + B/D^beta (keys E, A, B, alpha, beta).")

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        needed = 256 + 3 + len(self.special_tokens)
        if self.vocab_size < needed:
            raise ValueError(f"vocab_size ({self.vocab_size}) cannot hold 256 bytes + {3 + len(self.special_tokens)} special tokens; use >= {needed}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        if self.seq_len > self.max_position_embeddings:
            raise ValueError(f"seq_len ({self.seq_len}) exceeds max_position_embeddings ({self.max_position_embeddings})")
        chosen = [k for k in ("size", "budget_flops", "gpu_hours") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"set only one of size, budget_flops, gpu_hours (got {', '.join(chosen)})")
        from phases.model import sizing

        if self.size is not None and self.size not in sizing.SIZE_PRESETS:
            raise ValueError(f"size {self.size!r} is not a preset; choose from {', '.join(sizing.SIZE_PRESETS)}")
        sizing.hardware(self.gpu)  # an unknown GPU fails here, naming the known ones
        budget = self.budget_flops or (sizing.budget_from_gpu_hours(self.gpu_hours, self.gpu, self.mfu) if self.gpu_hours else None)
        if budget is not None:
            sizing.check_budget(budget, self.vocab_size, self.seq_len)
        return self


class PretrainConfig(Section):
    """Phase 3: next-token prediction with DeepSpeed."""

    max_steps: int = Field(150, ge=1, description="Optimizer steps.")
    micro_batch_size: int = Field(16, ge=1, description="Sequences per rank per micro-step.")
    grad_accum: int = Field(1, ge=1, description="Micro-steps per optimizer step.")
    lr: float = Field(3e-3, gt=0, le=1, description="Peak learning rate (AdamW).")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate as a fraction of lr (cosine).")
    warmup_steps: int = Field(10, ge=0, description="Linear warmup steps.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, ge=0, description="Gradient clipping norm (0 disables).")
    zero_stage: Literal[0, 1, 2, 3] = Field(0, description="DeepSpeed ZeRO stage.")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Training precision (fp32 on CPU).")
    attn_implementation: Literal["sdpa", "eager"] = Field(
        "sdpa",
        description="Attention kernel: sdpa (torch's scaled_dot_product_attention, which runs the flash "
        "kernel on CUDA in bf16/fp16) or eager (plain matmuls and softmax).",
    )
    num_gpus: int = Field(1, ge=1, description="Ranks per node (CPU processes when no GPU is present).")
    num_nodes: int = Field(1, ge=1, description="Nodes; >1 needs a hostfile.")
    hostfile: str | None = Field(None, description="DeepSpeed hostfile for multi-node runs.")
    eval_every: int = Field(50, ge=1, description="Validation loss every N steps.")
    eval_batches: int = Field(8, ge=1, description="Validation batches per evaluation.")
    seed: int = Field(0, description="Seed of initialization and data order.")
    timeout_s: int = Field(3600, ge=10, description="Kill the training job after this many seconds.")
    checkpoint_every: int = Field(50, ge=1, description="Save a resumable DeepSpeed checkpoint every N steps (and always at the end).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk; older ones are deleted after a newer one is complete.")
    resume: Literal["auto", "never"] = Field(
        "auto", description="auto: continue from the latest complete checkpoint of the same run; never: delete it and start fresh."
    )
    on_new_data: Literal["retrain", "warm_start", "fail"] = Field(
        "retrain",
        description="When the training data changed since the latest checkpoint (a nightly run on new data): "
        "retrain from scratch (the old data's checkpoints are replaced), warm_start from its weights and "
        "optimizer (step, lr schedule and data position reset; needs the same tokenizer, e.g. "
        "model.tokenizer_path), or fail.",
    )
    activation_checkpointing: bool = Field(False, description="Recompute activations in backward (less memory, ~30% more compute).")
    compile: bool = Field(False, description="torch.compile the model through DeepSpeed's engine.compile() (needs a C++ compiler on CPU).")
    peak_flops: float | None = Field(None, gt=0, description="Peak FLOP/s of one device for MFU; None looks the GPU up in a table (no MFU on CPU).")

    @model_validator(mode="after")
    def _check(self) -> "PretrainConfig":
        if self.num_nodes > 1 and not self.hostfile:
            raise ValueError(f"num_nodes={self.num_nodes} needs pretrain.hostfile (a DeepSpeed hostfile)")
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below max_steps ({self.max_steps})")
        return self


class AlignConfig(Section):
    """Phase 4: SFT on chat data, then (method) DPO, or a reward model and GRPO/RLOO; a capability check."""

    method: Literal["sft", "dpo", "grpo", "rloo"] = Field(
        "dpo", description="sft: SFT only; dpo: SFT then DPO; grpo / rloo: SFT, a reward model, then online RL against it."
    )
    sft_data: str | None = Field(None, description="JSONL of chat rows ({messages} or {prompt, completion}); unset: derived from the corpus.")
    preference_data: str | None = Field(None, description="JSONL of {prompt, chosen, rejected} rows; unset: derived from the corpus.")
    num_pairs: int = Field(512, ge=8, description="Most documented functions the corpus recipe uses (a seeded sample).")
    eval_fraction: float = Field(0.2, gt=0, lt=0.9, description="Held-out share of rows, by a hash of the function's qualified name (or the row id).")
    eval_rows: int = Field(64, ge=1, description="Most held-out rows scored per evaluation (eval loss, preference and reward accuracy).")
    max_steps: int = Field(30, ge=1, description="SFT optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Per-device batch size of SFT, DPO and the reward model.")
    lr: float = Field(5e-4, gt=0, le=1, description="SFT learning rate.")
    max_length: int = Field(128, ge=16, description="Longest example in tokens; longer rows are quarantined, not truncated.")
    seed: int = Field(0, description="Seed of the trainers, the recipe's sampling and its rejected answers.")
    logging_steps: int = Field(1, ge=1, description="Log (and print one progress line) every N optimizer steps.")
    dpo_steps: int = Field(10, ge=1, description="DPO optimizer steps.")
    dpo_lr: float = Field(1e-4, gt=0, le=1, description="DPO learning rate.")
    dpo_beta: float = Field(0.1, gt=0, le=10, description="DPO beta: strength of the KL tie to the SFT reference.")
    reward_model: bool = Field(False, description="Also train the reward model when method is dpo (grpo and rloo always train it).")
    reward_steps: int = Field(30, ge=1, description="Reward model optimizer steps.")
    reward_lr: float = Field(1e-3, gt=0, le=1, description="Reward model learning rate.")
    online_steps: int = Field(8, ge=1, description="GRPO / RLOO optimizer steps.")
    online_lr: float = Field(1e-4, gt=0, le=1, description="GRPO / RLOO learning rate.")
    online_beta: float = Field(0.05, gt=0, le=10, description="KL coefficient of GRPO / RLOO (> 0, so the KL to the SFT model is measured).")
    num_generations: int = Field(4, ge=2, le=64, description="Completions per prompt in GRPO / RLOO (the group baseline needs >= 2).")
    max_completion_length: int = Field(24, ge=1, le=1024, description="Longest GRPO / RLOO completion in tokens.")
    lora: bool = Field(
        False, description="Train LoRA adapters (peft, through TRL's peft_config) in SFT and DPO instead of all weights; merged on export."
    )
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (the update is scaled by lora_alpha / lora_r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA branch.")
    max_ppl_rise: float = Field(
        0.25, ge=0, le=100, description="Largest allowed relative rise of validation perplexity over the pretrained model's (0.25 = +25%)."
    )
    on_ppl_rise: Literal["warn", "fail"] = Field("warn", description="What a rise above max_ppl_rise does: log a warning, or fail the phase.")
    ppl_rows: int = Field(
        32, ge=1, description="Validation rows (of max_length tokens, packed from the data phase's validation split) for perplexity."
    )
    num_samples: int = Field(4, ge=0, le=64, description="Held-out prompts generated before and after alignment (a table).")
    sample_tokens: int = Field(24, ge=1, le=512, description="New tokens per sample generation (greedy).")
    register_as: str = Field(
        "llm-lifecycle-tiny", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="MLflow registered model name of the aligned model."
    )

    @model_validator(mode="after")
    def _check(self) -> "AlignConfig":
        if self.method in ("grpo", "rloo") and self.max_completion_length >= self.max_length:
            raise ValueError(f"max_completion_length ({self.max_completion_length}) must be below max_length ({self.max_length})")
        return self


class InferenceConfig(Section):
    """Phase 5: batch sampling from the aligned model, best-of-N against its reward model, int8 quantization.

    The sampling fields are also the flags of ``lifecycle generate`` (validated here alike).
    """

    prompts: tuple[str, ...] = Field(
        (), description="Literal prompts; empty: prompts_file, else the align phase's held-out chat prompts (sft_eval.jsonl)."
    )
    prompts_file: str | None = Field(
        None, description='JSONL of prompts, one a line: {"prompt": text} or {"messages": [...]} (the last assistant turn is dropped).'
    )
    num_prompts: int = Field(16, ge=1, le=10_000, description="Most prompts taken from the file (in file order).")
    chat: bool = Field(True, description="Wrap plain-text prompts in the tokenizer's chat template as one user turn (message rows always are).")
    greedy: bool = Field(False, description="Greedy decoding (argmax); the sampling fields below are then ignored.")
    max_new_tokens: int = Field(48, ge=1, le=4096, description="Most tokens to generate per completion.")
    temperature: float = Field(0.8, gt=0, le=5, description="Sampling temperature (> 0; use greedy for argmax).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass in (0, 1]; 1 disables.")
    top_k: int = Field(0, ge=0, le=100_000, description="Top-k sampling (0 disables).")
    min_p: float = Field(0.0, ge=0, lt=1, description="Min-p sampling: drop tokens below min_p x the top probability (0 disables).")
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="CTRL repetition penalty (1 disables, > 1 discourages repeats).")
    stop: tuple[str, ...] = Field((), max_length=8, description="Stop strings: a completion ends at (and includes) the first one it produces.")
    num_return_sequences: int = Field(1, ge=1, le=64, description="Samples per prompt.")
    batch_size: int = Field(4, ge=1, le=256, description="Prompts per generate() call.")
    seed: int = Field(0, ge=0, description="Sampling seed (the same config gives the same text).")
    best_of: int = Field(4, ge=1, le=64, description="Best-of-N: sample N completions per prompt, keep the reward model's favourite (1 disables).")
    quantize: bool = Field(True, description="Quantize the linear layers to int8, save the model and compare size, speed and perplexity with fp32.")
    table_rows: int = Field(16, ge=0, le=1000, description="Rows of the sample table logged to MLflow.")

    @model_validator(mode="after")
    def _check(self) -> "InferenceConfig":
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")
        if any(not p.strip() for p in self.prompts):
            raise ValueError("prompts must not be empty")
        if self.greedy and self.num_return_sequences > 1:
            raise ValueError(
                f"greedy decoding gives one completion per prompt; set num_return_sequences=1 (got {self.num_return_sequences}) or sample"
            )
        return self


OUR_TASKS = ("lifecycle_heldout_mc", "lifecycle_instruct_mc", "lifecycle_instruct_gen", "lifecycle_ppl")


class EvaluateConfig(Section):
    """Phase 6: an lm-eval suite on the aligned model and its baselines, memorization and
    contamination probes, and the gate that promotes a better model to ``champion``."""

    tasks: tuple[str, ...] = Field(
        OUR_TASKS,
        min_length=1,
        description="lm-eval tasks or tags: ours (built from held-out data; lifecycle_ppl = one task per source) or any in task_dirs.",
    )
    task_dirs: tuple[str, ...] = Field((), description="Extra folders of lm-eval task YAMLs (a standard task pointed at local data files).")
    num_fewshot: int = Field(0, ge=0, description="Few-shot examples per prompt.")
    limit: int | None = Field(None, ge=1, description="Score at most this many items per task (None: all).")
    batch_size: int = Field(8, ge=1, description="lm-eval batch size.")
    bootstrap_iters: int = Field(1000, ge=0, description="Bootstrap resamples for the standard error of non-mean metrics (chrf).")
    baselines: bool = Field(True, description="Also score the untrained initialisation and the pretrained (unaligned) model.")
    num_examples: int = Field(64, ge=4, description="Held-out continuation questions built from the validation split.")
    num_choices: int = Field(4, ge=2, le=10, description="Choices per multiple-choice question.")
    context_chars: int = Field(200, ge=20, description="Characters of a document shown as the question.")
    continuation_chars: int = Field(60, ge=5, description="Characters of the true continuation (and of each distractor).")
    instruct_examples: int = Field(64, ge=2, description="Held-out chats of the align phase used by the instruction tasks (at most).")
    perplexity_docs: int = Field(16, ge=1, description="Validation documents per source for lifecycle_ppl_<source>.")
    perplexity_chars: int = Field(2000, ge=100, description="Characters of each such document scored (the first ones).")
    perplexity_batches: int = Field(16, ge=1, description="Batches of val.bin for the token-level validation perplexity.")
    memorization_samples: int = Field(64, ge=0, description="Training sequences probed for verbatim extraction (0: no probe).")
    memorization_prefix: int = Field(32, ge=1, description="Prompt length of the probe, in tokens.")
    memorization_suffix: int = Field(32, ge=1, description="Greedy-decoded tokens compared with the training text.")
    canaries: tuple[str, ...] = Field((), description="Strings planted in the training data; the probe reports whether each is reproduced.")
    contamination_ngram: int = Field(13, ge=4, description="Words per n-gram of the overlap check between task items and training data.")
    contamination_policy: Literal["flag", "clean", "fail"] = Field(
        "flag", description="Contaminated items: flag them (report only), score the clean subset only, or fail the run."
    )
    primary: str = Field("lifecycle_heldout_mc/acc", pattern=r"^[^/]+/[^/]+$", description="TASK/METRIC deciding promotion.")
    margin: float = Field(0.0, ge=0, description="How much the challenger must beat the champion on the primary metric to be promoted.")
    promote: bool = Field(True, description="Run the gate: move alias champion to a better registered model.")
    seed: int = Field(0, description="Seed for building task items and sampling probes.")
