// ElementwiseKernel operation: one thread per row i of a plan made on the host (planning.Plan: its
// float64 params and int64 boxes, e.g. a window of a larger grid's plan), writing the int32 box table
// and the tile count the binning passes read. Such plans are evaluated in float64.
// in_params: raw int64 boxes
// out_params: raw int32 ibox, raw int64 tiles
gh_plan_row(i, &boxes[0], &ibox[0], &tiles[0]);
