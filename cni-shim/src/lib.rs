//! The Switchyard CNI plugin and the pod-attach protocol it speaks with the controller.
