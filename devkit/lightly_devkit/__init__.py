"""Developer kit: real infrastructure for the tests and benchmarks (not shipped in the images' runtime path).

* :mod:`lightly_devkit.net` -- free loopback ports, proxy variables to clear for loopback HTTP.
* :mod:`lightly_devkit.envtest` -- a real etcd + kube-apiserver (+ kube-controller-manager) control plane
  from ``KUBEBUILDER_ASSETS``, envtest style.
* :mod:`lightly_devkit.engine` -- the container engine (``CONTAINER_ENGINE``) and image builds.
"""
