"""A character-level transformer language model, small enough to train in
minutes on one GPU (or slowly on a CPU). A hac reference model (SPEC S10).

It trains on the text in corpus.txt (replace it with your own) and prints
progress lines like the sample does, then a short generated passage:

    loss: 4.123456  [    0/ 2000]
"""

import argparse
import math
import os

import torch
from torch import nn


class CharModel(nn.Module):
    def __init__(self, vocab, dim, heads, layers, context):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(context, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout=0.1, batch_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers)
        self.head = nn.Linear(dim, vocab)
        mask = torch.triu(torch.full((context, context), float("-inf")), diagonal=1)
        self.register_buffer("mask", mask)

    def forward(self, x):
        t = x.shape[1]
        h = self.embed(x) + self.pos[:t]
        h = self.blocks(h, mask=self.mask[:t, :t])
        return self.head(h)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default="", help="write the trained weights to this file")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    here = os.path.dirname(os.path.abspath(__file__))
    text = open(os.path.join(here, "corpus.txt"), encoding="utf-8").read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long)
    print(f"Using {device} device; {len(text)} characters, vocabulary {len(chars)}", flush=True)

    model = CharModel(len(chars), args.dim, 4, 2, args.context).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps):
        starts = torch.randint(0, len(data) - args.context - 1, (args.batch,), generator=g)
        x = torch.stack([data[s:s + args.context] for s in starts]).to(device)
        y = torch.stack([data[s + 1:s + args.context + 1] for s in starts]).to(device)
        logits = model(x)
        loss = loss_fn(logits.reshape(-1, len(chars)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"loss: {loss.item():>7f}  [{step:>5d}/{args.steps:>5d}]", flush=True)

    model.eval()
    out = data[:args.context].tolist()
    with torch.no_grad():
        for _ in range(200):
            x = torch.tensor([out[-args.context:]], device=device)
            probs = torch.softmax(model(x)[0, -1], dim=0)
            out.append(int(torch.multinomial(probs, 1, generator=None)))
    print("Sample:\n" + "".join(chars[i] for i in out[args.context:]), flush=True)
    print(f"Perplexity at the end: {math.exp(loss.item()):.2f}")
    if args.save:
        torch.save(model.state_dict(), args.save)
    print("Done!")


if __name__ == "__main__":
    main()
