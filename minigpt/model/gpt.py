"""The GPT model: embeddings, a stack of pre-norm blocks, a final norm and the LM head.

Which norm / MLP / attention / positional encoding is used comes from `ArchConfig`; sizes come from
`ModelConfig`. Initialisation follows GPT-2: normal(0, 0.02), with residual output projections
scaled by 1/sqrt(2 * n_layer) so the residual stream's variance does not grow with depth, or set to
zero with `arch.zero_init_proj` (modded-nanogpt, nanochat), so every block starts as the identity.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt.config import ArchConfig, ModelConfig, PosEncoding
from minigpt.model.checks import check_model
from minigpt.model.components import CausalSelfAttention, make_mlp, make_norm, plain_rmsnorm
from minigpt.model.loss import CHUNK_ELEMENTS, chunk_loss, compiled_chunk_loss, head_weight, linear_cross_entropy, logits_from


def padded_vocab_size(model: ModelConfig) -> int:
    m = max(model.vocab_pad_multiple, 1)
    return m * ((model.vocab_size + m - 1) // m)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, arch: ArchConfig, model: ModelConfig):
        super().__init__()
        self.ln_1 = make_norm(arch, model.n_embd)
        self.attn = CausalSelfAttention(arch, model)
        self.ln_2 = make_norm(arch, model.n_embd)
        self.mlp = make_mlp(arch, model)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), positions, attn_mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    chunk_elements = CHUNK_ELEMENTS  # logits per chunk of the training loss (tests shrink it)

    def __init__(self, arch: ArchConfig, model: ModelConfig):
        super().__init__()
        check_model(arch, model)  # the checks validate() runs, for a GPT built outside training
        self.arch, self.model_config = arch, model
        self.block_size = model.block_size
        self.vocab_size = model.vocab_size
        self.padded_vocab_size = padded_vocab_size(model)
        self.wte = nn.Embedding(self.padded_vocab_size, model.n_embd)
        self.wpe = nn.Embedding(model.block_size, model.n_embd) if arch.pos_encoding == PosEncoding.learned else None
        self.embed_norm = plain_rmsnorm(model.n_embd, arch.norm_eps, arch.embed_norm)
        self.h = nn.ModuleList(Block(arch, model) for _ in range(model.n_layer))
        self.ln_f = make_norm(arch, model.n_embd)
        self.lm_head = nn.Linear(model.n_embd, self.padded_vocab_size, bias=False)
        if arch.tie_embeddings:
            self.lm_head.weight = self.wte.weight  # tied input/output embeddings
        self.apply(self._init_weights)
        self.chunk_loss = chunk_loss  # one chunk of the training loss: compiled on its own by `compiled`

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_scaled_init", False):  # an output projection onto the residual stream
                std = 0.0 if self.arch.zero_init_proj else std / math.sqrt(2 * self.model_config.n_layer)
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)  # std 0: zeros (the RNG still advances alike)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx: (B, T) token ids. Returns (logits (B, T, vocab_size), None), or with targets (None, mean loss).

        With targets the logits are never materialised whole: the loss is computed chunk by chunk
        (minigpt/model/loss.py), which is what lets a 64 x 1024 GPT-2 micro-batch fit a 40 GB GPU.
        """
        x = self.body(idx)
        if targets is None:
            return self.head(x), None
        # all padded rows on every device (aligned matmuls; the padding gets -inf logits inside the loss)
        return None, linear_cross_entropy(x, self.lm_head.weight, targets, self.vocab_size, self.arch.logit_softcap,
                                          self.chunk_elements, self.chunk_loss)

    def compiled(self, backend: str | Callable = "inductor") -> nn.Module:
        """This model under torch.compile, for training and validation steps: the body is one graph, the
        chunked loss's loop stays eager (one deliberate graph break) and each chunk's loss is compiled on its
        own, so the graphs do not grow with B x T (minigpt/model/loss.py). Called directly, `self` runs its
        body eagerly (evaluation, sampling) and its loss with the compiled chunk."""
        self.chunk_loss = compiled_chunk_loss(backend)
        return torch.compile(self, backend=backend)

    def body(self, idx: torch.Tensor, positions: torch.Tensor | None = None,
             attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Everything but the LM head: the final-norm hidden states (B, T, n_embd).

        Split from `head` so scorers (HellaSwag) can apply the vocab-sized head only where they need it.
        Scorers that pack several continuations of one context into a row also pass each token's
        `positions` (B, T) and a boolean `attn_mask` (B, 1, T, T; True = may attend) instead of the
        causal default.
        """
        B, T = idx.shape
        if positions is None and T > self.block_size:
            raise ValueError(f"sequence length {T} exceeds the model context {self.block_size}")
        if positions is not None and int(positions.max()) >= self.block_size:
            raise ValueError(f"position {int(positions.max())} exceeds the model context {self.block_size}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device) if positions is None else positions)
        x = self.embed_norm(x)
        for block in self.h:
            x = block(x, positions, attn_mask)
        return self.ln_f(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states -> logits over the real vocabulary (padded ids never get probability mass).

        Multiplies the padded rows on GPU (then slices), the real rows on CPU (see minigpt/model/loss.py);
        `arch.logit_softcap` caps them (cap * tanh(logits / cap)), as it caps the training loss's logits."""
        return logits_from(x, head_weight(self.lm_head.weight, self.vocab_size), self.vocab_size,
                           self.arch.logit_softcap)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once). non_embedding drops token and position tables."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
            if self.wpe is not None:
                n -= self.wpe.weight.numel()
        return n

    def param_counts(self) -> dict[str, int]:
        """Parameters per component (tied weights once: a tied head counts 0), to show what a switch costs."""
        def count(*modules) -> int:
            return sum(p.numel() for m in modules if m is not None for p in m.parameters())

        blocks = list(self.h)
        norms = [self.ln_f, *(m for b in blocks for m in (b.ln_1, b.ln_2))]
        return {
            "embeddings": count(self.wte),
            "positions": count(self.wpe),
            "attention": count(*(b.attn for b in blocks)),
            "mlp": count(*(b.mlp for b in blocks)),
            "norms": count(*norms),
            "head": 0 if self.lm_head.weight is self.wte.weight else count(self.lm_head),
        }

    def describe_params(self) -> str:
        """e.g. 'embeddings 6.44M + attention 0.26M + mlp 0.53M + norms 0.00M + head tied'."""
        counts = self.param_counts()
        tied = self.lm_head.weight is self.wte.weight
        parts = [f"{k} {v / 1e6:.2f}M" for k, v in counts.items() if not (k == "positions" and self.wpe is None)
                 and not (k == "head" and tied)]
        return " + ".join(parts + (["head tied"] if tied else []))

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B style.

        6 * N for the matmuls over all weights that multiply activations (the LM head included; the
        position table and an untied token table, which are lookups, excluded) plus
        12 * n_layer * n_embd * T for the attention scores.
        """
        T = seq_len or self.block_size
        n = self.num_params() - (self.wpe.weight.numel() if self.wpe is not None else 0)
        if self.lm_head.weight is not self.wte.weight:
            n -= self.wte.weight.numel()
        cfg = self.model_config
        return 6.0 * n + 12.0 * cfg.n_layer * cfg.n_embd * T

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = 50,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample continuations; temperature 0 means greedy. The head runs on the last position only."""
        for _ in range(max_new_tokens):
            x = self.body(idx[:, -self.block_size:])
            logits = self.head(x[:, -1, :]).float()
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                probs = F.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
