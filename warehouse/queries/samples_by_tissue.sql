-- Samples kept per cohort and tissue, with how many patients contribute both tumour and normal.
SELECT cohort, tissue, count(*) AS samples,
       count(*) FILTER (WHERE patient IN (
           SELECT patient FROM samples s2
           WHERE s2.cohort = samples.cohort AND s2.kept AND s2.tissue = 'normal'
       )) AS from_paired_patients
FROM samples
WHERE kept
GROUP BY ALL
ORDER BY cohort, tissue;
