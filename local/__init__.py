"""Local emulator: serves every function declared in template.yaml on one port (SPEC §10).

Run it with `python -m local`; see `local.emulator` for what it does and does not emulate.
"""
