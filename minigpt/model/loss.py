"""The LM head and its loss: logits over the real vocabulary, and a memory-lean cross-entropy.

A GPT-2 micro-batch of 64 x 1024 tokens has 3.3G logits over the 50,304-row padded head: 6.6 GB in
bf16, 13.2 GB for the fp32 copy `F.cross_entropy` needs, as much again for the log-softmax it saves
for backward and for its gradient. `linear_cross_entropy` never holds more than one chunk of rows:
for each chunk it computes the logits, the loss and, when gradients are wanted, the gradient of the
loss with respect to the hidden states and the head weight right away (the softmax minus the one-hot
target, times the weight or the inputs), so backward only scales the stored gradients. Same matmuls
as the plain path, about 1% of the logits memory (Liger-Kernel's fused linear cross-entropy, in torch).

Which rows of the head to multiply. GPU kernels want the padded row count (50,304 is a multiple of
128; 50,257 bf16 rows are not even 16-byte aligned), so the padded weight is multiplied and the padded
logits are set to -inf inside the loss or sliced off the returned logits. The loss does that on every
device: on CPU too the padded multiply measured faster (`python -m minigpt.bench.head`: 13-16% at widths
128 and 768). For returned logits (evaluation, sampling) `head_weight` picks per device: CUDA the padded
rows, CPU the real ones, which keeps the logits contiguous for the log-softmax that follows (10% faster
at width 128, the size CPU runs use; see the README for both measurements).

Under torch.compile the chunk loop stays out of the graph (torchtitan keeps its head out too): unrolled,
it made the graph grow with B x T (103 chunks at 64 x 1024, tracing 1 s -> 13 s, twice: training and
validation). `linear_cross_entropy` is `torch.compiler.disable`d, so a compiled model breaks its graph
once there, and `compiled_chunk_loss` compiles one chunk's loss on its own (`GPT.compiled` wires both):
the same few graphs (with or without gradients, a full and a shorter last chunk) whatever B x T is,
and the chunk size, hence the memory, of the eager loss.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# Devices whose returned logits come from the padded head (the rest multiply the real vocabulary's rows).
PADDED_HEAD_DEVICES = {"cuda"}
# Logits per chunk of the lean loss: 2^25 (~1/8 GB in fp32), 660 rows of GPT-2's vocabulary.
CHUNK_ELEMENTS = 2 ** 25
IGNORE_INDEX = -1


def head_weight(weight: torch.Tensor, vocab_size: int, padded: bool | None = None) -> torch.Tensor:
    """The head weight to multiply for logits: all padded rows (GPU) or the real vocabulary's rows (CPU)."""
    if padded is None:
        padded = weight.device.type in PADDED_HEAD_DEVICES
    return weight if padded else weight[:vocab_size]


def logits_from(x: torch.Tensor, weight: torch.Tensor, vocab_size: int, softcap: float | None = None) -> torch.Tensor:
    """Logits over the real vocabulary (padded ids never get probability mass); optional tanh softcap."""
    logits = F.linear(x, weight)
    if logits.size(-1) > vocab_size:
        logits = logits[..., :vocab_size]
    return softcapped(logits, softcap)


def softcapped(logits: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """cap * tanh(logits / cap) (Gemma 2): keeps logits in (-cap, cap); None leaves them alone."""
    return logits if not softcap else softcap * torch.tanh(logits / softcap)


def chunk_rows(n_rows: int, n_cols: int, chunk_elements: int = CHUNK_ELEMENTS) -> int:
    """Rows per chunk: about `chunk_elements` logits, a multiple of 64 rows, at least 64."""
    rows = max(64, chunk_elements // max(n_cols, 1) // 64 * 64)
    return min(rows, max(n_rows, 1))


def chunk_loss(x_c, y_c, weight, vocab_size, softcap, want_grad: bool):
    """Summed loss of one chunk and, if wanted, d(sum)/d(logits) in fp32 (with the softcap's chain rule)."""
    z = F.linear(x_c, weight).float()  # the matmul in the autocast dtype, the softmax in fp32
    if softcap:  # in place: one more chunk-sized buffer (tanh's output, kept for the gradient), not four
        t = z.div_(softcap).tanh_()
        z = t * softcap
    if z.size(-1) > vocab_size:
        z[:, vocab_size:] = float("-inf")  # padded ids: probability 0, gradient 0
    valid = y_c != IGNORE_INDEX
    safe = torch.where(valid, y_c, 0)
    target = z.gather(1, safe[:, None]).squeeze(1)
    # log-sum-exp and softmax in place over the one fp32 buffer (torch.logsumexp would allocate another)
    top = z.amax(dim=-1, keepdim=True)
    total = z.sub_(top).exp_().sum(dim=-1, keepdim=True)
    lse = (top + total.log()).squeeze(1)
    loss_sum = torch.where(valid, lse - target, 0.0).sum()
    if not want_grad:
        return loss_sum, None
    g = z.div_(total)  # softmax
    g.scatter_add_(1, safe[:, None], torch.full_like(target[:, None], -1.0))
    g.mul_(valid[:, None])
    if softcap:
        g.mul_(t.square_().neg_().add_(1.0))  # d(cap * tanh(l / cap)) / dl = 1 - tanh^2, in t's buffer
    return loss_sum, g


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of softcap(x @ weight.T) over non-ignored targets; gradients made in forward."""

    @staticmethod
    def forward(ctx, x, weight, targets, vocab_size: int, softcap, rows: int, chunk_fn):
        n_valid = (targets != IGNORE_INDEX).sum().clamp_min(1)  # a device tensor: no host sync
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.empty_like(x) if want_x else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        for start in range(0, x.size(0), rows):
            x_c, y_c = x[start:start + rows], targets[start:start + rows]
            loss_sum, g = chunk_fn(x_c, y_c, weight, vocab_size, softcap, want_grad=True)
            total += loss_sum
            if want_x:
                grad_x[start:start + rows] = g @ weight  # autocast runs these two in the matmul dtype
            if want_w:
                grad_w += (g.t() @ x_c).float()
            del g  # this chunk's logits buffer goes before the next chunk's is allocated
        inv = 1.0 / n_valid
        if want_x:
            grad_x.mul_(inv.to(grad_x.dtype))
        if want_w:
            grad_w = grad_w.mul_(inv).to(weight.dtype)
        ctx.save_for_backward(grad_x, grad_w)
        return total * inv

    @staticmethod
    def backward(ctx, grad_out):
        grad_x, grad_w = ctx.saved_tensors
        return (grad_x * grad_out.to(grad_x.dtype) if grad_x is not None else None,
                grad_w * grad_out.to(grad_w.dtype) if grad_w is not None else None,
                None, None, None, None, None)


def compiled_chunk_loss(backend: str | Callable = "inductor") -> Callable:
    """`chunk_loss` compiled on its own, for `linear_cross_entropy(..., chunk_fn=...)` under a compiled model."""
    return torch.compile(chunk_loss, backend=backend)


@torch.compiler.disable  # the chunk loop never enters a compiled graph (see the module docstring)
def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                         softcap: float | None = None, chunk_elements: int = CHUNK_ELEMENTS,
                         chunk_fn: Callable = chunk_loss) -> torch.Tensor:
    """Mean cross-entropy of the head `softcap(x @ weight.T)` against `targets` (-1 = ignore), chunk by chunk.

    x: (..., C) hidden states; weight: (V or padded V, C); targets: (...). Equal to
    `F.cross_entropy(logits_from(x, weight, vocab_size, softcap).float(), targets, ignore_index=-1)`
    to rounding, without ever holding the whole logits tensor. `chunk_fn`: `chunk_loss`, or it compiled.
    """
    x2, y = x.reshape(-1, x.size(-1)), targets.reshape(-1)
    rows = chunk_rows(x2.size(0), weight.size(0), chunk_elements)
    if torch.is_grad_enabled() and (x2.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(x2, weight, y, vocab_size, softcap, rows, chunk_fn)
    n_valid = (y != IGNORE_INDEX).sum().clamp_min(1)
    total = sum(chunk_fn(x2[s:s + rows], y[s:s + rows], weight, vocab_size, softcap, want_grad=False)[0]
                for s in range(0, x2.size(0), rows))
    return total / n_valid


def plain_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                        softcap: float | None = None) -> torch.Tensor:
    """The textbook path (whole logits, fp32 copy): the yardstick the lean loss is tested and benched against."""
    logits = logits_from(x, weight, vocab_size, softcap)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)
