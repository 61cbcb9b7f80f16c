"""The floor everything stands on: what training, engines and the runtime must agree on."""
