"""A small PyTorch training program for trying hac (SPEC S8).

It trains a multi-layer perceptron on a synthetic, FashionMNIST-shaped data
set that it generates itself from a seed (nothing is downloaded), and prints
progress lines like the PyTorch tutorial the seed manual uses:

    loss: 2.298501  [    0/60000]

The same seed gives the same losses wherever it runs, so
`hac run -- python3 train.py` can be compared with `python3 train.py`.
"""

import argparse
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(n, seed, split):
    """Returns n 28x28 "images" of 10 classes: a class pattern (the same for
    every split) plus noise (different for each split)."""
    templates = torch.randn(10, 28 * 28, generator=torch.Generator().manual_seed(seed)) * 0.3
    g = torch.Generator().manual_seed(seed * 1000 + split + 1)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = templates[labels] + torch.randn(n, 28 * 28, generator=g)
    return TensorDataset(images.view(n, 1, 28, 28), labels)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.layers = nn.Sequential(
            nn.Linear(28 * 28, 512), nn.ReLU(),
            nn.Linear(512, 512), nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        return self.layers(self.flatten(x))


def train(loader, model, loss_fn, optimizer, device):
    size = len(loader.dataset)
    model.train()
    for batch, (X, y) in enumerate(loader):
        X, y = X.to(device), y.to(device)
        loss = loss_fn(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if batch % 100 == 0:
            print(f"loss: {loss.item():>7f}  [{batch * len(X):>5d}/{size:>5d}]", flush=True)


def test(loader, model, loss_fn, device):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            pred = model(X)
            loss += loss_fn(pred, y).item()
            correct += (pred.argmax(1) == y).type(torch.float).sum().item()
    print(f"Test Error: \n Accuracy: {100 * correct / len(loader.dataset):>0.1f}%, "
          f"Avg loss: {loss / len(loader):>8f} \n", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--samples", type=int, default=60000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default="", help="write the trained weights to this file")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # the same float order everywhere
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"Using {device} device; HAC_ACCELERATOR_MODEL={os.environ.get('HAC_ACCELERATOR_MODEL', '-')}", flush=True)

    train_loader = DataLoader(make_data(args.samples, args.seed, 0), batch_size=64)
    test_loader = DataLoader(make_data(args.samples // 6, args.seed, 1), batch_size=64)
    model = Net().to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    for t in range(args.epochs):
        print(f"Epoch {t + 1}\n-------------------------------", flush=True)
        train(train_loader, model, loss_fn, optimizer, device)
        test(test_loader, model, loss_fn, device)
    if args.save:
        torch.save(model.state_dict(), args.save)
    print("Done!")


if __name__ == "__main__":
    main()
