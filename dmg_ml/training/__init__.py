"""Training the CNN: the reference loop, the batched trainer and process runtime settings.

Imports nothing heavy: ``dmg_ml`` imports ``runtime`` from here before torch is loaded.
"""
