// ElementwiseKernel operation for normalize="count": one thread per plan kernel k = i, writing the
// float64 sum of its unnormalised values g over its support box (the divisor of every pixel's value).
// in_params: raw float64 params, raw int64 boxes
// out_params: float64 count_sum
count_sum = gh_count_sum(&params[0], &boxes[0], i);
