"""Resume equivalence: training that stops and resumes is the training that never stopped."""
