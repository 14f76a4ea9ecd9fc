"""The model catalog: an operator-editable TOML file of models, their inputs and prices."""
