"""Channel importance for :class:`moprune.space.ChannelSpace`: one score per gene, computed once.

* ``"l1"``: L1 norm of every filter of the group (summed over the coupled conv/linear layers);
* ``"taylor"``: sum over a few batches of ``|activation * d loss / d activation|`` at the output of
  every layer of the group (GeneCAI); without labels the model's own predictions are the targets;
* ``"random"``: uniform scores from a ``torch.Generator``.
"""

import numpy as np
import torch
from torch import nn

from moprune.exceptions import invalid_value


def channel_importance(space, work, kind, data, n_batches, generator, device=None):
    """One score per gene (root channel) of ``space``, higher = keep first.

    Args:
        space: The :class:`~moprune.space.ChannelSpace` being built (its index maps are ready).
        work: A private copy of the model (hooks are attached to it, never to the base model).
        kind: ``"l1"``, ``"taylor"`` or ``"random"``.
        data: Batches for ``"taylor"`` (see :func:`batches`).
        n_batches: How many batches ``"taylor"`` uses.
        generator: ``torch.Generator``, int seed or ``None`` (seed 0) for ``"random"``.
        device: Where ``"taylor"`` runs its batches (``work`` is moved there; ``None``: the CPU).
    """
    scores = np.zeros(space.n_genes)
    if kind == "random":
        gen = generator
        if gen is None or isinstance(gen, int):
            gen = torch.Generator().manual_seed(0 if gen is None else int(gen))
        elif not isinstance(gen, torch.Generator):
            raise invalid_value("generator", "a torch.Generator, an int seed or None", type(gen).__name__)
        return torch.rand(space.n_genes, generator=gen, dtype=torch.float64).numpy()
    outs = [(key, tgt, gene) for key, (tgt, gene) in space._slices.items() if key[1] == "out"]
    if kind == "l1":
        for (mname, _), tgt, gene in outs:
            m = work.get_submodule(mname)
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                norms = m.weight.detach().abs().flatten(1).sum(1).double().numpy()
                np.add.at(scores, gene, norms[tgt])
        return scores
    device = torch.device("cpu") if device is None else device
    work.to(device)
    acts = {}
    handles = []
    for (mname, _), tgt, gene in outs:
        def hook(module, inputs, output, mname=mname):
            acts[mname] = output
        handles.append(work.get_submodule(mname).register_forward_hook(hook))
    try:
        for x, y in batches(data, n_batches):
            x, y = x.to(device), (None if y is None else y.to(device))
            acts.clear()
            with torch.enable_grad():
                logits = work(x)
                if y is None:
                    y = logits.argmax(dim=1)
                loss = nn.functional.cross_entropy(logits, y)
                names = list(acts)
                grads = torch.autograd.grad(loss, [acts[n] for n in names], allow_unused=True)
            for n, g in zip(names, grads):
                if g is None:
                    continue
                a = acts[n].detach()
                per = (a * g).abs().transpose(0, 1).reshape(a.shape[1], -1).sum(1).double().cpu().numpy()
                for (mname, _), tgt, gene in outs:
                    if mname == n:
                        np.add.at(scores, gene, per[tgt])
    finally:
        for h in handles:
            h.remove()
    return scores


def batches(data, n_batches):
    """Yield up to ``n_batches`` ``(x, y or None)`` from a tensor, an (x, y) pair, a Dataset or a loader."""
    if isinstance(data, torch.Tensor):
        yield data, None
        return
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        yield data[0], data[1]
        return
    if isinstance(data, torch.utils.data.Dataset):
        data = torch.utils.data.DataLoader(data, batch_size=128, shuffle=False)
    for i, batch in enumerate(data):
        if i >= n_batches:
            break
        if isinstance(batch, torch.Tensor):
            yield batch, None
        else:
            yield batch[0], (batch[1] if len(batch) > 1 else None)
