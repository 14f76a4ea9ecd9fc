"""The imagine surface (seed 004): styles, model choice, reimagine actions and lineage."""
