"""`i2vgen schedule` against diffusers on chains no fixture holds: random classes, spacings,
prediction types, lengths and seeds, each run through the CLI and compared (timesteps exact,
prev_samples within 1e-9). Needs the pinned reference stack (requirements.txt) and a built CLI:

    python tests/reference/check_schedule.py [--cli target/debug/i2vgen] [--cases 40] [--seed 1]
"""

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import diffusers

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import I2VGEN_SCHEDULER, correctly_rounded_sqrt, f64_steps  # noqa: E402

CLASSES = ["DDIMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"]
SCHEDULES = [
    {},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "rescale_betas_zero_snr": False},
    {"beta_schedule": "linear", "rescale_betas_zero_snr": False},
]


def case(rng):
    class_name = rng.choice(CLASSES)
    overrides = dict(rng.choice(SCHEDULES))
    overrides["timestep_spacing"] = rng.choice(["leading", "trailing", "linspace"])
    overrides["prediction_type"] = rng.choice(["v_prediction", "epsilon", "sample"])
    overrides["steps_offset"] = rng.choice([0, 1])
    if class_name != "DDIMScheduler":
        overrides["solver_order"] = rng.choice([1, 2])
        overrides["final_sigmas_type"] = rng.choice(["zero", "sigma_min"])
    if class_name == "DDIMScheduler" and overrides["timestep_spacing"] == "linspace":
        overrides["steps_offset"] = 0
    return class_name, overrides, rng.randint(1, 60)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cli", default="target/debug/i2vgen")
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp, correctly_rounded_sqrt(), f64_steps():
        tmp = Path(tmp)
        for k in range(args.cases):
            class_name, overrides, steps = case(rng)
            s = getattr(diffusers, class_name).from_config(I2VGEN_SCHEDULER, **overrides)
            s.set_timesteps(steps)
            if hasattr(s, "sigmas"):
                s.sigmas = s.sigmas.double()
            if hasattr(s, "final_alpha_cumprod"):
                s.alphas_cumprod = s.alphas_cumprod.double()
                s.final_alpha_cumprod = s.final_alpha_cumprod.double()
            g = torch.Generator().manual_seed(10_000 + k)
            shape = (1, rng.randint(1, 4), 2, 3)
            sample = torch.randn(*shape, generator=g, dtype=torch.float64)
            outputs = torch.randn(len(s.timesteps), *shape, generator=g, dtype=torch.float64)
            (tmp / "config.json").write_text(s.to_json_string())
            save_file({"sample": sample, "model_outputs": outputs}, tmp / "in.safetensors")
            chain, x = [], sample
            for i, t in enumerate(s.timesteps):
                x = s.step(outputs[i], t, x).prev_sample
                chain.append(x)
            chain = torch.stack(chain)
            subprocess.run([args.cli, "schedule", "--config", tmp / "config.json", "--steps", str(steps),
                            "--inputs", tmp / "in.safetensors", "--output", tmp / "out.safetensors"], check=True,
                           capture_output=True)
            out = load_file(tmp / "out.safetensors")
            label = f"{class_name} {json.dumps(overrides)} steps={steps}"
            assert torch.equal(out["timesteps"], s.timesteps.to(torch.int64)), f"{label}: timesteps differ"
            error = (out["prev_samples"] - chain).abs().max().item()
            worst = max(worst, error)
            print(f"{error:.2e}  {label}")
            assert error <= 1e-9, f"{label}: prev_samples off by {error:e}"
    print(f"{args.cases} chains: timesteps exact, prev_samples max abs error {worst:.2e}")


if __name__ == "__main__":
    main()
