"""Source data: Xena readers, barcodes, genome, preprocessing, windows, schemas, gene inputs."""
