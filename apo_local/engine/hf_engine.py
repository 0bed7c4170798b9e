"""Transformers fallback backend: the same ``Engine`` protocol as ``VLLMEngine``, in plain PyTorch.

For machines where vLLM cannot be installed; vLLM stays the default. Chat templating and
context-aware label tokenization come from the shared ``ChatFormatter``, so both backends see
exactly the same token ids.

Scoring (``score_choices``) is exact: log P(label tokens | chat-formatted prompt), summed over
the label's tokens. One forward pass over ``prompt + label[:-1]`` yields the next-token
distribution after every prefix of the label, so a label set needs one sequence per distinct
``label[:-1]`` that is not a prefix of another one -- a single sequence per prompt when every
label is one token (the common case). Sequences are length-sorted and run in left-padded
batches with an attention mask and matching position ids; only the last few positions go
through the LM head (``logits_to_keep``).

Generation (``generate``) is a small decode loop with a KV cache over a left-padded batch of
rows (one row per requested sample), each with its own temperature / top-p / token budget /
stop strings and its own ``torch.Generator``: a seeded request draws the same samples whatever
else shares its batch. Greedy when temperature == 0. A reply shape masks every step (``guide.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from apo_local.engine.chat import ChatFormatter
from apo_local.engine.modelinfo import eos_ids, loaded_context_length, model_fingerprint
from apo_local.engine.protocol import ChoiceScores, Generation, GenerationRequest, tail_repeats
from apo_local.engine.settings import EngineSettings, has_cuda_gpu
from apo_local.support.errors import ApoError
from apo_local.support.quiet import quiet_transformers

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


@dataclass
class _Row:
    """One sample being decoded: a request's prompt ids plus its sampling state."""

    req_index: int
    sample_index: int
    prompt_ids: list[int]
    max_new: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    generator: object  # torch.Generator, or None for greedy
    guide: object = None  # a RowMatcher when the request has a reply shape (engine/guide.py)
    repetition: tuple | None = None  # the request's loop stop rule (protocol.tail_repeats)
    finish: str = "stop"  # "length" when the token budget ended it, "repetition" when the rule did
    out_ids: list[int] = field(default_factory=list)
    text: str | None = None  # final text once finished
    done: bool = False


class TransformersEngine:
    batch_size = 16  # sequences per forward pass
    batch_tokens = 16384  # and at most this many (padded) tokens per forward pass

    def __init__(self, model_path: Path, settings: EngineSettings):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from apo_local.models.registry import model_folder_problem

        model_path = Path(model_path)
        self.settings = settings
        self.device = torch.device(
            "cuda" if has_cuda_gpu() and torch.cuda.is_available() else "cpu"
        )  # no vLLM fork here
        torch.manual_seed(settings.seed)
        problem = model_folder_problem(model_path)
        if problem:
            raise ApoError(f"transformers engine cannot load {model_path}: {problem}")
        try:
            dtype = self._resolve_dtype(model_path, settings.dtype)
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=dtype, local_files_only=True)
            model.to(self.device).eval()
        except ApoError:
            raise
        except Exception as exc:  # many exception types; the user needs one actionable line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ApoError(
                f"transformers engine failed to load {model_path}: {first} -- check the model folder "
                f"(config.json, weights, tokenizer files) and dtype (now {settings.dtype})"
            ) from None
        self.model = model
        self.tokenizer = tokenizer
        self.dtype = dtype
        from apo_local.models.registry import chat_template_for

        self.chat = ChatFormatter(
            tokenizer, chat_template_for(model_path), settings.template_kwargs(), name=str(model_path)
        )

        config = model.config
        self.max_model_len = loaded_context_length(config, settings.max_model_len)
        dtype_name = str(dtype).removeprefix("torch.")
        self.model_id = f"{model_fingerprint(model_path)}|{dtype_name}|{self.max_model_len}|hf{self.chat.template_id}"

        eos = eos_ids(model, config, tokenizer)
        self.eos_ids = frozenset(eos)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (min(eos) if eos else 0)
        from apo_local.engine.guide import TokenGuide

        self.guide = TokenGuide(tokenizer, config.get_text_config().vocab_size, self.eos_ids)
        # Unseeded requests draw their sample seeds from here: reproducible per process and settings.
        self._seed_rng = torch.Generator().manual_seed(settings.seed)

    def _resolve_dtype(self, model_path: Path, name: str):
        import torch
        from transformers import AutoConfig

        name = (name or "auto").lower()
        if name == "auto":
            config = AutoConfig.from_pretrained(str(model_path), local_files_only=True)
            dt = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
            if dt is None:
                dt = getattr(config.get_text_config(), "dtype", None)
            if isinstance(dt, str):
                dt = getattr(torch, dt.removeprefix("torch."), None)
            if not isinstance(dt, torch.dtype):
                dt = torch.float32
            if dt == torch.float16 and self.device.type == "cpu":
                dt = (
                    torch.bfloat16
                )  # fp16 kernels are slow or missing on CPU; bf16 has the same range as the weights need
            return dt
        if name not in _DTYPES:
            raise ApoError(f"unknown engine dtype {name!r} (use auto, float32, bfloat16 or float16)")
        return getattr(torch, _DTYPES[name])

    # -- protocol -------------------------------------------------------------------------

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(self.chat.prompt_ids(p)) for p in prompts]

    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
        import torch

        if not choices:
            return [ChoiceScores((), len(self.chat.prompt_ids(p))) for p in prompts]
        label_ids = self.chat.label_ids(choices)
        longest = max(len(ids) for ids in label_ids)
        # Continuations to run after the prompt: each label's ids[:-1], dropping any that is a
        # prefix of another (its distributions come out of the longer one's forward pass).
        conts = sorted({ids[:-1] for ids in label_ids}, key=len, reverse=True)
        kept: list[tuple[int, ...]] = []
        for c in conts:
            if not any(k[: len(c)] == c for k in kept):
                kept.append(c)
        cover = [next(j for j, k in enumerate(kept) if k[: len(ids) - 1] == ids[:-1]) for ids in label_ids]

        results: list[ChoiceScores | None] = [None] * len(prompts)
        seqs: list[tuple[int, int, list[int]]] = []  # (prompt index, continuation index, token ids)
        n_prompt: dict[int, int] = {}
        for i, prompt in enumerate(prompts):
            ids, error = self.chat.fit(prompt, self.max_model_len, longest)
            if error:
                results[i] = ChoiceScores.failed(len(choices), len(ids), error)
                continue
            n_prompt[i] = len(ids)
            for j, k in enumerate(kept):
                seqs.append((i, j, ids + list(k)))

        # step_lp[(i, j)][d]: log-softmax row after prompt i + kept[j][:d]
        step_lp: dict[tuple[int, int], torch.Tensor] = {}
        order = sorted(range(len(seqs)), key=lambda s: len(seqs[s][2]))
        for chunk in self._chunks(order, [len(s[2]) for s in seqs]):
            tails = [len(kept[seqs[s][1]]) + 1 for s in chunk]
            logits = self._forward([seqs[s][2] for s in chunk], keep=max(tails))
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, s in enumerate(chunk):
                i, j, _ = seqs[s]
                step_lp[(i, j)] = logprobs[row, logprobs.shape[1] - tails[row] :]

        for i, n in n_prompt.items():
            scores = []
            for ids, j in zip(label_ids, cover):
                rows = step_lp[(i, j)]
                scores.append(float(sum(rows[d, tok].item() for d, tok in enumerate(ids))))
            results[i] = ChoiceScores(tuple(scores), n)
        return results  # type: ignore[return-value]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        import torch

        results: list[Generation | None] = [None] * len(requests)
        rows: list[_Row] = []
        greedy_copies: dict[int, int] = {}
        prompt_lens: dict[int, int] = {}
        for i, req in enumerate(requests):
            ids, error = self.chat.fit(req.prompt, self.max_model_len)
            if error:
                results[i] = Generation((), len(ids), 0, error)
                continue
            room = self.max_model_len - len(ids)
            prompt_lens[i] = len(ids)
            max_new = max(0, min(req.max_tokens, room))
            greedy = req.temperature <= 0
            if greedy:  # n greedy samples are identical: decode once, copy
                greedy_copies[i] = max(1, req.n)
            for k in range(1 if greedy else max(1, req.n)):
                gen = None
                if not greedy:
                    if req.seed is not None:
                        seed = req.seed if k == 0 else (req.seed * 1_000_003 + k) % (2**63 - 1)
                    else:
                        seed = int(torch.randint(0, 2**62, (1,), generator=self._seed_rng))
                    gen = torch.Generator(device=self.device).manual_seed(seed)
                stop = tuple(s for s in req.stop if s)
                rows.append(
                    _Row(
                        i,
                        k,
                        ids,
                        max_new,
                        req.temperature,
                        req.top_p,
                        stop,
                        gen,
                        self.guide.matcher(req.shape),
                        req.repetition,
                    )
                )

        order = sorted(range(len(rows)), key=lambda r: len(rows[r].prompt_ids))
        lengths = [len(r.prompt_ids) + r.max_new for r in rows]
        for chunk in self._chunks(order, lengths):
            self._decode([rows[r] for r in chunk])

        texts: dict[int, list[tuple[int, str, int, str]]] = {}
        for r in rows:
            texts.setdefault(r.req_index, []).append((r.sample_index, r.text or "", len(r.out_ids), r.finish))
        for i, samples in texts.items():
            samples.sort()
            copies = greedy_copies.get(i, 1)
            results[i] = Generation(
                texts=tuple(t for _, t, _, _ in samples) * copies,
                input_tokens=prompt_lens[i],
                output_tokens=sum(n for _, _, n, _ in samples) * copies,
                finish_reasons=tuple(f for _, _, _, f in samples) * copies,
            )
        return results  # type: ignore[return-value]

    # -- internals ------------------------------------------------------------------------

    def _chunks(self, order: list[int], lengths: list[int]):
        """Split ``order`` (sorted by length) into batches bounded by count and padded tokens."""
        chunk: list[int] = []
        for idx in order:
            longest = max([lengths[c] for c in chunk] + [lengths[idx]])
            if chunk and (len(chunk) >= self.batch_size or longest * (len(chunk) + 1) > self.batch_tokens):
                yield chunk
                chunk = []
            chunk.append(idx)
        if chunk:
            yield chunk

    def _padded(self, seqs: list[list[int]]):
        import torch

        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            input_ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[r, width - len(s) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return input_ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def _forward(self, seqs: list[list[int]], keep: int):
        """Logits of the last ``keep`` positions of each left-padded sequence: [batch, keep, vocab]."""
        import torch

        input_ids, mask, positions = self._padded(seqs)
        with torch.inference_mode():
            logits = self._call(input_ids, mask, positions, keep=keep, use_cache=False).logits
        return logits[:, -keep:]

    _keeps_logits = True  # False once the model turned down ``logits_to_keep``

    def _call(self, input_ids, mask, positions, keep: int, **kwargs):
        """One forward pass; only the last ``keep`` positions go through the LM head where supported."""
        if self._keeps_logits:
            try:
                return self.model(
                    input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep, **kwargs
                )
            except TypeError as exc:  # an architecture without logits_to_keep: full logits instead
                if "logits_to_keep" not in str(exc):
                    raise
                self._keeps_logits = False
        return self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, **kwargs)

    def _decode(self, rows: list[_Row]) -> None:
        """Decode a batch of rows to completion (their own budgets, stops and generators)."""
        import torch

        for r in rows:
            if r.max_new <= 0:
                r.text, r.done, r.finish = "", True, "length"
        if all(r.done for r in rows):
            return
        steps = max(r.max_new for r in rows)
        input_ids, mask, positions = self._padded([r.prompt_ids for r in rows])
        cache = None  # the model starts a DynamicCache on the first call
        next_pos = positions[:, -1:] + 1
        feed = input_ids
        with torch.inference_mode():
            for _step in range(steps):
                out = self._call(feed, mask, positions, keep=1, use_cache=True, past_key_values=cache)
                cache = out.past_key_values
                logits = out.logits[:, -1].float()  # [batch, vocab]
                new_tokens = []
                for b, r in enumerate(rows):
                    if r.done:
                        new_tokens.append(self.pad_id)
                        continue
                    tok = self._pick(logits[b], r)
                    new_tokens.append(tok)
                    r.out_ids.append(tok)
                    self._check_finished(r)
                if all(r.done for r in rows):
                    break
                feed = torch.tensor(new_tokens, dtype=torch.long, device=self.device).unsqueeze(1)
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                positions = next_pos
                next_pos = next_pos + 1
        for r in rows:
            if r.text is None:
                r.text = self._final_text(r)
            r.done = True

    def _pick(self, logits, r: _Row) -> int:

        if r.guide is not None:
            r.guide.mask(logits)
        tok = self._draw(logits, r)
        if r.guide is not None:
            r.guide.accept(tok)
        return tok

    def _draw(self, logits, r: _Row) -> int:
        import torch

        if r.generator is None:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / r.temperature, dim=-1)
        if r.top_p < 1.0:
            sorted_probs, sorted_idx = torch.sort(probs, descending=True)
            before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass strictly before each token
            drop = before >= r.top_p
            drop[0] = False  # always keep the most likely token
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, sorted_idx, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=r.generator))

    def _check_finished(self, r: _Row) -> None:
        if r.out_ids[-1] in self.eos_ids or (r.guide is not None and r.guide.finished):
            r.done = True
        elif r.stop:
            # A stop string completed by the newest token lies in the last few tokens' text.
            window = max(len(s) for s in r.stop) + 8
            tail = self.tokenizer.decode(r.out_ids[-window:], skip_special_tokens=True)
            if any(s in tail for s in r.stop):
                r.done = True
        if not r.done and len(r.out_ids) >= r.max_new:
            r.done, r.finish = True, "length"
        elif not r.done and r.repetition and tail_repeats(r.out_ids, *r.repetition):
            r.done, r.finish = True, "repetition"
        if r.done:
            r.text = self._final_text(r)

    def _final_text(self, r: _Row) -> str:
        ids = r.out_ids[:-1] if r.out_ids and r.out_ids[-1] in self.eos_ids else r.out_ids
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cuts = [text.find(s) for s in r.stop if s and s in text]
        return self.chat.clean_reply(text[: min(cuts)] if cuts else text)
