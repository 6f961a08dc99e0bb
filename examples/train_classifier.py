"""Train the digits classifier whose features score benign fidelity (``hfaudit/fidelity.py``).

    python examples/train_classifier.py [--out hfaudit/assets/digits_classifier.safetensors] [--epochs 40]

Trained on 80% of the scikit-learn digits at 16x16 (the data of the example models), with small
shifts, noise and contrast changes so that its features stay meaningful on generated samples, which
are never as clean as the originals. Prints the held-out accuracy; the weights are written as
safetensors with the accuracy and the split in the metadata.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from hfaudit.digits import load_digits_images
from hfaudit.fidelity import DigitsClassifier, classifier_path
from hfaudit.seeding import make_generator, seed_everything


def augment(x01: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 1-pixel shifts, contrast in [0.8, 1.2], Gaussian noise (std up to 0.08)."""
    n = x01.shape[0]
    padded = F.pad(x01, (1, 1, 1, 1))
    dx = torch.randint(0, 3, (n,), generator=gen)
    dy = torch.randint(0, 3, (n,), generator=gen)
    shifted = torch.stack([padded[i, :, dy[i]:dy[i] + 16, dx[i]:dx[i] + 16] for i in range(n)])
    contrast = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    noise = torch.randn(shifted.shape, generator=gen) * 0.08 * torch.rand(n, 1, 1, 1, generator=gen)
    return (shifted * contrast + noise).clamp(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=classifier_path())
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    seed_everything(args.seed)
    gen = make_generator(args.seed)
    images, labels = load_digits_images(16, 1)
    x01 = (images + 1) / 2
    perm = torch.randperm(x01.shape[0], generator=gen)
    n_train = int(0.8 * x01.shape[0])
    tr, va = perm[:n_train], perm[n_train:]
    model = DigitsClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(args.epochs):
        model.train()
        order = tr[torch.randperm(n_train, generator=gen)]
        for i in range(0, n_train, 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(model(augment(x01[idx], gen)), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(x01[va]).argmax(1) == labels[va]).float().mean())
        print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  held-out accuracy {acc:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out), metadata={"heldout_accuracy": f"{acc:.4f}", "n_train": str(n_train),
                                              "n_heldout": str(len(va)), "seed": str(args.seed),
                                              "input": "(N, 1, 16, 16) in [0, 1]"})
    print(f"wrote {args.out} (held-out accuracy {acc:.4f})")


if __name__ == "__main__":
    main()
