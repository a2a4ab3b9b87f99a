# On PYTHONPATH for the engine benchmark only (bench/e2e/worker.py), so that the
# engine's spawned processes run it too: see e2e_lora_load_override.py.
import e2e_lora_load_override

e2e_lora_load_override.install()
