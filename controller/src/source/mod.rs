//! Sources of Kubernetes objects: the API server and the cluster file.
