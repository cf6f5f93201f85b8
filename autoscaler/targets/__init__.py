"""What gets scaled: a Kubernetes Deployment/StatefulSet, or local worker processes."""
