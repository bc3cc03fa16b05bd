"""GLAD (Whitehill et al., 2009): each worker has an ability, each item a difficulty.

A worker with ability ``a`` answers an item with inverse difficulty ``b > 0`` correctly with
probability ``sigmoid(a * b)``, and spreads the rest evenly over the wrong classes. ``a`` below
zero is an adversary; ``b`` near zero is an item nobody can read. EM alternates the posterior over
true classes (closed form, the same tensor shape as one-coin's) with a few Adam steps on ``a`` and
``log b`` under Gaussian priors, which keep a worker seen once and an item with one vote finite.
"""

from __future__ import annotations

import math

from lsun_crowd.aggregate import Posterior, Votes
from lsun_crowd.dawid_skene import _Fit, _sum_by
from lsun_crowd.embed import pick_device


def glad(
    votes: Votes,
    known: dict[int, int] | None = None,
    ability_prior: float = 1.0,
    prior_scale: float = 0.3,
    tolerance: float = 1e-5,
    max_iterations: int = 100,
    gradient_steps: int = 10,
    learning_rate: float = 0.05,
    device: str | None = None,
) -> Posterior:
    """GLAD by EM. Abilities have a Normal(``ability_prior``, ``prior_scale``) prior and log
    inverse difficulties a Normal(0, ``prior_scale``) one. The worker estimate is the expected
    share of a worker's votes that match the posterior."""
    import torch

    where = pick_device(device or "auto")
    fit = _Fit.start(votes, known, where, torch.float32)
    n_items, n_classes, n_workers = len(votes.items), len(votes.classes), len(votes.workers)
    wrong_classes = math.log(n_classes - 1)
    ability = torch.full((n_workers,), ability_prior, device=where, requires_grad=True)
    log_easiness = torch.zeros(n_items, device=where, requires_grad=True)
    optimizer = torch.optim.Adam([ability, log_easiness], lr=learning_rate)
    answered = fit.answer * n_items + fit.item  # each vote's (answer, item) in the flat posterior
    log_odds = torch.zeros((n_classes - 1, n_items), device=where)
    n_votes = max(len(votes.item_index), 1)
    for _ in range(max_iterations):
        # M-step: raise the expected log-likelihood of the votes under the current posterior.
        agreement = fit.probability.reshape(-1)[answered]
        for _ in range(gradient_steps):
            score = ability[fit.worker] * torch.exp(log_easiness[fit.item])
            # log sigmoid(s) = -softplus(-s); log(1 - sigmoid(s)) = -softplus(s)
            expected = agreement * -torch.nn.functional.softplus(-score) + (1 - agreement) * (
                -torch.nn.functional.softplus(score) - wrong_classes
            )
            prior = ((ability - ability_prior) ** 2).sum() + (log_easiness**2).sum()
            loss = -(expected.sum() - prior / (2 * prior_scale**2)) / n_votes
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        with torch.no_grad():
            score = ability[fit.worker] * torch.exp(log_easiness[fit.item])
            # E-step: a vote's log-odds of being right against one particular wrong class is
            # s + log(K - 1).
            if fit.update(fit.coin_log_odds(score + wrong_classes, log_odds)) < tolerance:
                break
    with torch.no_grad():
        agreement = fit.probability.reshape(-1)[answered]
        worker_votes = _sum_by(fit.worker, torch.ones_like(agreement), n_workers)
        accuracy = _sum_by(fit.worker, agreement, n_workers) / worker_votes.clamp_min(1.0)
    return fit.posterior(votes, accuracy)
