"""The run configuration's schema: every section, its keys, their defaults and one-line meanings.

Loading, flags, presets and migration of older layouts live in ``apo_local.run.config``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

from apo_local.engine import EngineSettings

NonNegInt = Field(ge=0)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def D(default, description: str, **kw):
    """A config field with its one-line meaning (shown by ``apo-local optimize --help``)."""
    return Field(default, description=description, **kw)


class EngineConfig(_Section):
    model: str | None = D(None, "model alias (models/registry.yaml) or local folder; unset: the registry default")
    backend: Literal["vllm", "transformers", "openai"] = D(
        "vllm", "engine backend (openai: an OpenAI-compatible server at base_url)"
    )
    dtype: str = D("auto", "weight dtype passed to the backend")
    max_model_len: PositiveInt | None = D(
        None,
        "context length in tokens (prompt + answer); unset: the model's own, capped by what the KV cache memory holds",
    )
    gpu_memory_utilization: float | None = D(
        None,
        "memory fraction for the engine (host RAM on CPU); unset: "
        "automatic (split between two models on one GPU), 0.3 on CPU",
        gt=0,
        le=1,
    )
    kv_cache_gb: PositiveFloat | None = D(
        None, "KV cache size in GiB; unset: vLLM's choice on GPU, on CPU $APO_LOCAL_CPU_KV_CACHE_GB or 2"
    )
    tensor_parallel_size: PositiveInt = D(1, "GPUs per engine (tensor parallelism)")
    enforce_eager: bool | None = D(None, "no CUDA graph capture; unset: true on CPU")
    engine_args: dict[str, Any] = D(
        {},
        "any other vllm.LLM argument, passed through (quantization, "
        "trust_remote_code, tokenizer, tokenizer_mode, pipeline_parallel_size, ...)",
    )
    chat_template_kwargs: dict[str, Any] = D(
        {}, "chat-template arguments, e.g. {enable_thinking: true}; thinking is off by default"
    )
    device: str | None = D(None, 'CUDA device(s) for this role\'s engine ("1", "2,3"); unset: automatic')
    base_url: str | None = D(
        None,
        "backend openai: the server's URL, e.g. http://127.0.0.1:8000/v1 (model: "
        "its served name; unset: the first it serves)",
    )
    workers: PositiveInt = D(8, "backend openai: requests in flight at once")
    server_scoring: Literal["auto", "label-ids", "echo", "top-logprobs", "generate"] = D(
        "auto", "backend openai: how labels are scored (auto: the best the server offers)"
    )

    def settings(self, seed: int) -> EngineSettings:
        return EngineSettings(seed=seed, **self.model_dump())


class OptimizerConfig(EngineConfig):
    """The optimizer model; ``model: null`` means the same model (and engine) as the target."""

    model: str | None = D(None, "optimizer model alias or local folder; unset: the target's model (one engine)")
    temperature: float = D(0.7, "optimizer sampling temperature", ge=0)
    top_p: float = D(1.0, "optimizer nucleus sampling mass", gt=0, le=1)
    max_tokens: PositiveInt = D(
        1024, "most tokens per optimizer reply; a reply that reaches it is truncated and rejected"
    )
    guided: bool = D(
        True,
        "guided decoding: replies with a known shape (tags, steps) are decoded inside it; "
        "false: free text, parsed leniently (ablation)",
    )
    cut_repetition: bool = D(
        True,
        "stop a reply that starts repeating itself and cut the loop off, keeping the text "
        "before it; false: loops run to max_tokens and are truncated",
    )


class ScoringConfig(_Section):
    mode: Literal["logprobs", "generate"] = D("logprobs", "how the target answers: label log-probs or generated text")
    max_tokens: PositiveInt = D(8, "most answer tokens in generate mode")
    parse: Literal["label", "positive-prefix"] = D(
        "label",
        "generate mode: how a reply is read: label (the label it names first) | positive-prefix (the ProTeGi "
        "reference's: the positive label if the reply starts with it, case-insensitive, else the other "
        "label; binary tasks with a positive_label)",
    )
    calibration: Literal["none", "batch", "content-free"] = D(
        "none",
        "logprobs mode: remove each prompt's label lean before the argmax: batch (each label's mean log-prob "
        "over 32 fixed training inputs) or content-free (over N/A, empty and [MASK] inputs); see "
        "apo_local/calibration.py",
    )


SELECTOR_NAMES = ("ucb", "ucb-e", "successive-rejects", "successive-halving", "uniform", "pareto")


# "all" | "form" | "off"; a YAML true / false (the earlier boolean key) means "all" / "off"
HygieneRules = Annotated[
    Literal["all", "form", "off"],
    BeforeValidator(lambda v: {True: "all", False: "off"}.get(v, v) if isinstance(v, bool) else v),
]


class SearchConfig(_Section):
    proposer: str = D(
        "protegi",
        "how candidates are made, a method (apo_local/search/proposers); its knobs live in "
        "the section of that name (protegi's also serve one-step and three-stage)",
    )
    rounds: int = D(6, "search rounds (expand, then select)", ge=1)
    beam_size: PositiveInt = D(4, "prompts kept after every round")
    minibatch_size: PositiveInt = D(64, "training rows each beam prompt is scored on to find its errors")
    max_expansion: PositiveInt = D(8, "new candidates kept per beam prompt (a seeded pick)")
    parse_fallback: Literal["whole", "none"] = D(
        "whole", "optimizer reply without <START>/<END> tags: use it whole, or drop it"
    )
    initial_prompt: str | None = D(None, "starting instruction; unset: the task's")
    hygiene: HygieneRules = D(
        "all",
        "candidate hygiene: all (reject chat filler or meta-commentary, too short, a "
        "repeated sentence, a lost label word of the parent, a copy of training rows) | "
        "form (the first three only: they judge every operator's proposals alike) | off; "
        "true: all, false: off",
    )
    copy_overlap: float = D(
        0.5,
        "hygiene: share of a candidate's word 6-grams found in training inputs above which it is a copy of the data",
        gt=0,
        le=1,
    )
    max_prompt_tokens: PositiveInt | None = D(
        None,
        "hard cap on a prompt's size in target tokens (the template "
        "rendered with an empty input: instruction, demonstrations and "
        "fixed text): candidates over it are rejected before scoring, an "
        "initial prompt over it is an error; unset: no cap",
    )


class ProTeGiConfig(_Section):
    """Knobs of the protegi proposer and of its operator ablations one-step and three-stage."""

    n_gradients: int = D(4, "error groups (gradient calls) per beam prompt; 0: paraphrases only", ge=0)
    errors_per_gradient: PositiveInt = D(4, "errors shown per gradient call")
    reasons_per_gradient: PositiveInt = D(1, "reasons asked per gradient call (three-stage: notes per critique)")
    edits_per_gradient: PositiveInt = D(1, "rewritten prompts per reason (one-step: per error group)")
    mc_samples: int = D(2, "Monte-Carlo paraphrases per edit and per parent", ge=0)


class SamplingConfig(_Section):
    """Knobs of the data-free proposers rewrite and improve."""

    samples_per_parent: int = D(4, "rewrites sampled per beam prompt", ge=0)
    mc_samples: int = D(2, "Monte-Carlo paraphrases per rewrite and per parent", ge=0)


class ABOConfig(_Section):
    """Knobs of Automatic Behavior Optimization (Ma et al., 2024)."""

    init_samples: PositiveInt = D(4, "step lists sampled from a plain instruction")
    revise_samples: PositiveInt = D(4, "revisions sampled of the first failed step")
    errors_per_revision: PositiveInt = D(4, "failed examples shown per revision")
    demonstration: bool = D(True, "a worked demonstration (true) or a 'Follow the steps strictly.' line")
    work_tokens: PositiveInt = D(128, "tokens the target may write while showing its steps")
    answer: Literal["generate", "logprobs"] = D(
        "generate",
        "how the target answers: generate (the paper: it writes its steps, then the label, parsed; every "
        "score of the run) | logprobs (ablation: the label's log-prob scores the prompt, the steps never run)",
    )


class FewShotConfig(_Section):
    """Knobs of the demonstration proposers fewshot and instruction+fewshot (the latter also reads protegi's)."""

    samples_per_parent: PositiveInt = D(4, "demonstration moves (add, remove or swap one) per beam prompt")
    max_demos: PositiveInt = D(4, "most demonstrations in a prompt")
    pool_size: PositiveInt = D(
        64,
        "training rows set aside (seeded, label-balanced) as the demonstration pool; "
        "never in minibatches or selection samples",
    )


class SelectionConfig(_Section):
    selector: str = D("ucb", "best-arm bandit that picks the beam (acceptance bandit): " + " | ".join(SELECTOR_NAMES))
    budget: PositiveInt = D(2048, "example evaluations per round's selection")
    batch_size: PositiveInt = D(32, "examples per arm pull (ucb, ucb-e)")
    arms_per_round: PositiveInt = D(8, "arms pulled per bandit round (ucb, ucb-e)")
    ucb_c: PositiveFloat = D(1.0, "ucb exploration weight c: mean + c*sqrt(ln t / n) (1: the reference's)")
    ucb_t: Literal["round", "examples"] = D(
        "round",
        "ucb's t: bandit rounds played (the reference's) or examples pulled (a far larger bonus: nearly uniform)",
    )
    warmup: int | None = D(
        None, "examples per arm in the first bandit round (ucb, ucb-e); unset: batch_size; 0: none", ge=0
    )
    sample: Literal["shared", "independent"] = D(
        "shared",
        "bandit rows per round: one shared sample for every arm (paired, the reference's) or one sample per arm",
    )
    reward: Literal["metric", "accuracy"] = D(
        "metric",
        "selection reward: follow the task's metric (f1, macro_f1: class-balanced correctness) or plain correctness",
    )
    ucb_e_a: PositiveFloat = D(2.0, "ucb-e exploration parameter a: mean + sqrt(a / n)")
    acceptance: Literal["bandit", "naive", "validated"] = D(
        "bandit",
        "bandit: the selector picks among parents + proposals; naive: the newest proposals, unevaluated; "
        "validated: a proposal replaces its parent only if it scores higher",
    )
    validation_k: PositiveInt = D(4, "validated: proposals scored per parent")
    validation_size: PositiveInt = D(32, "validated: rows of the fixed validation sample")
    length_objective: Literal["off", "pareto", "penalty"] = D(
        "off",
        "prompt tokens as a second objective: off; pareto: the beam from the Pareto front of (estimate, "
        "prompt tokens); penalty: the beam by estimate - length_penalty x tokens / 100",
    )
    length_penalty: float = D(0.01, "penalty: estimate lost per 100 prompt tokens", ge=0)
    pick: Literal["estimate", "shortest-within-ci"] = D(
        "estimate",
        "the selected prompt: the beam's best training estimate, or the beam's shortest prompt whose "
        "estimate is within the 95% CI (Wilson) of the best",
    )
    final_pick: Literal["guarded", "reference", "method"] = D(
        "guarded",
        "pick on the validation rows: guarded (by the selection's reward, balanced accuracy for F1-type "
        "metrics, and the initial prompt competes with the final beam), reference (the final beam "
        "only, by the task's metric) or method (no pick: the method's own final prompt, the final beam's "
        "first; the guarded pick is recorded beside it)",
    )


# "true" | "wrong"; an unquoted YAML true (or --feedback-labels true) means "true"
LabelSource = Annotated[Literal["true", "wrong"], BeforeValidator(lambda v: "true" if v is True else v)]


class FeedbackConfig(_Section):
    """What the optimizer is shown (Melcer et al., 2025; Ma et al., 2024). Corruption is seeded by ``seed``."""

    labels: LabelSource = D("true", "labels shown to the optimizer: true or wrong (corrupted)")
    selection_labels: LabelSource = D("true", "labels the selection rewards are computed against")
    show_evaluation: bool = D(True, "false: inputs and outputs only, not which are right")
    numeric_offset: PositiveFloat = D(5.0, "numeric tasks: a wrong label is the true value + U(-k, k)")
    errors: Literal["real", "pseudo"] = D("real", "pseudo: correct rows shown with flipped predictions")


class EvaluationConfig(_Section):
    test_split: str = D("test", "split the final prompts are scored on")
    validation_split: str = D(
        "auto",
        "rows kept apart from training and test, on which the final beam is scored "
        "to pick the selected prompt: auto (the task's 'validation' split, else "
        "validation_rows held out of train), none, or a split name",
    )
    validation_rows: PositiveInt = D(
        200,
        "auto: training rows held out as validation (at most a fifth of "
        "train; with train_limit, at most a quarter of it)",
    )
    test_limit: PositiveInt | None = D(None, "score the first N test rows only; unset: all")
    per_round_test: bool = D(False, "also score the beam on the test split after every round")
    attribution: bool = D(
        True,
        "edit attribution of the selected prompt (lineage gains, sentence ablation) "
        "on the validation and test rows, in results.json",
    )


class BudgetConfig(_Section):
    max_target_calls: PositiveInt | None = D(None, "stop after this many target prompts (example evaluations)")
    max_optimizer_tokens: PositiveInt | None = D(None, "stop after this many optimizer tokens (in + out)")
    max_minutes: PositiveFloat | None = D(None, "stop after this many minutes of search")


class TrackingConfig(_Section):
    logger: Literal["off", "files", "mlflow"] = D(
        "off",
        "offline experiment tracking of params, per-round metrics "
        "and artifacts (mlflow: a file store, where mlflow is installed)",
    )
    dir: str | None = D(None, "where it logs; unset: files -> <run dir>/tracking, mlflow -> ./mlruns")
    experiment: str = D("apo-local", "mlflow experiment name")


class MetaPromptConfig(_Section):
    gradient: str | None = D(None, "jinja2 file replacing the built-in gradient meta-prompt")
    edit: str | None = D(None, "jinja2 file replacing the built-in edit meta-prompt")
    paraphrase: str | None = D(None, "jinja2 file replacing the built-in paraphrase meta-prompt")
    error: str | None = D(None, "jinja2 file replacing the built-in error block")
    error_noeval: str | None = D(None, "jinja2 file replacing the error block without evaluation")
    one_step: str | None = D(None, "jinja2 file replacing the built-in one-step meta-prompt")
    critique: str | None = D(None, "jinja2 file replacing the built-in critique meta-prompt")
    feedback: str | None = D(None, "jinja2 file replacing the built-in feedback meta-prompt")
    rewrite: str | None = D(None, "jinja2 file replacing the built-in rewrite meta-prompt")
    improve: str | None = D(None, "jinja2 file replacing the built-in improve meta-prompt")
    abo_init: str | None = D(None, "jinja2 file replacing the built-in ABO step-writing meta-prompt")
    abo_revise: str | None = D(None, "jinja2 file replacing the built-in ABO step-revision meta-prompt")
    abo_demo: str | None = D(None, "jinja2 file replacing the built-in ABO demonstration meta-prompt")
    abo_check: str | None = D(None, "jinja2 file replacing the built-in ABO step-compliance judgement")


class RunConfig(_Section):
    task: str = D("liar", "built-in task name or a task .yaml file")
    seed: int = D(0, "seed of every random draw and engine request")
    train_limit: PositiveInt | None = D(None, "use N training rows (a seeded subset); unset: all")
    cache: str | None = D(None, "result cache file, or off; unset: ~/.cache/apo-local")
    target: EngineConfig = EngineConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scoring: ScoringConfig = ScoringConfig()
    search: SearchConfig = SearchConfig()
    protegi: ProTeGiConfig = ProTeGiConfig()
    rewrite: SamplingConfig = SamplingConfig()
    improve: SamplingConfig = SamplingConfig()
    abo: ABOConfig = ABOConfig()
    fewshot: FewShotConfig = FewShotConfig()
    selection: SelectionConfig = SelectionConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    budget: BudgetConfig = BudgetConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    meta_prompts: MetaPromptConfig = MetaPromptConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_off(cls, v):
        return "off" if v is False else v  # YAML reads a bare `off` as false

    def optimizer_engine_config(self) -> EngineConfig:
        """Engine settings of the optimizer; inherits the target's model when it names neither a model nor a server."""
        engine_fields = set(EngineConfig.model_fields)
        if self.optimizer.model is None and self.optimizer.base_url is None:
            return self.target
        return EngineConfig(**self.optimizer.model_dump(include=engine_fields))
