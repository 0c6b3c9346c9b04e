"""Compile the textbook MLP spec and train it on scikit-learn's real 8x8 digits.

A stand-in for `dagnet train` until the training CLI lands: it shows the
compiled module is an ordinary nn.Module that trains like hand-written code.
"""

import torch
from sklearn.datasets import load_digits

import dagnet

torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
y = torch.tensor(digits.target)
perm = torch.randperm(len(x))
train, test = perm[:1500], perm[1500:]

model = dagnet.compile("specs/mlp.yaml")
print(model.code.strip())
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(30):
    for batch in train[torch.randperm(len(train))].split(64):
        loss = torch.nn.functional.cross_entropy(model(x=x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
model.eval()
with torch.no_grad():
    accuracy = (model(x=x[test]).argmax(1) == y[test]).float().mean().item()
print(f"mlp on digits: test accuracy {accuracy:.3f} on {len(test)} held-out images")
