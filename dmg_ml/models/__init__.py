"""Models: the DeepMethyGene CNN (and, by name, the baselines it is compared with)."""
