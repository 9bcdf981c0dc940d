// ElementwiseKernel operation: one thread per kernel k = i, for normalize="count".
// Arguments: raw float64 params, raw int64 boxes -> float64 count_sum.
count_sum = gh_count_sum(&params[0], &boxes[0], i);
