"""The model of a checkpoint: schema, locating the weights, canonical names, one side of a comparison."""
