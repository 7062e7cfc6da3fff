"""Feature flags: boolean or multi-variant switches with targeting rules, a percentage rollout and
weighted variants, evaluated by a pure function (`core.flags.evaluation`).

Bucketing follows Unleash's clients, so a user lands in the same bucket here as there:
`murmur3_32("{flag}:{user}", seed 0) % 100 + 1 <= rollout` for the rollout, and the variant
hash (seed 86028157, modulo the total weight) for variants.
"""
