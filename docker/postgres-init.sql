-- Run once by the postgres image when its volume is new: MLflow's backend store gets a database of
-- its own (MLflow and Dagster both have a "runs" table).
CREATE DATABASE mlflow;
