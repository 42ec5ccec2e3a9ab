"""The pure rule core: YAML rules → compiled, explainable checks. No Flask, Redis or network here."""
