"""Differential privacy for secagg: DP-SGD, accounting, the budget ledger, audits.

How the trainer uses it (record-level DP-SGD, one ledger per run)::

    from secagg_privacy import accounting, budget, dpsgd, ledger, noise

    # once, before round 1: calibrate σ for the WHOLE planned schedule
    q = dpsgd.poisson_sample_rate(expected_batch_size=B, dataset_size=n_client)
    sigma = accounting.calibrate_noise_multiplier(
        target_epsilon=eps, delta=delta, sample_rate=q, steps=steps_per_round * rounds)
    book = ledger.PrivacyLedger.open(run_dir / "ledger")
    book.set_budget(client, epsilon=eps, delta=delta, round_index=0)
    guard = budget.ClientBudgetGuard(client=client, budget_epsilon=eps, delta=delta)

    # every round
    params = dpsgd.DPSGDParams(sigma, clip, q, steps_per_round, expected_batch_size=B)
    chosen = budget.select_within_budget(book, cohort, {c: params.event for c in cohort})
    #   (raises BudgetExceededError when nobody can afford the round)
    stats = dpsgd.train_dp_sgd(model, x, y, params=params, lr=lr,
                               noise=noise.SecureGaussian(), sampler=noise.OsByteSource(),
                               guard=guard)           # client-side check + record
    book.record_round(client, r, event=params.event, delta=delta,
                      noise_multiplier=sigma, sample_rate=q, steps=stats.steps,
                      clip_norm=clip)                 # commit; stores cumulative ε

Client-level (distributed) DP for the secure schemes lives in
:mod:`secagg_privacy.distributed` and is recorded under its own ledger kind.
``privacy`` never imports ``secagg`` or ``tenseal``; only :mod:`secagg_privacy.dpsgd`
imports Opacus.
"""
