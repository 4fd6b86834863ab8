"""Example apps that stand in for the container images of Istio's samples.

Each is a small stdlib program run by the image catalogue
(``meshwork.agent.images``) for an image name the samples' manifests use: it
listens on ``$POD_IP`` at the port the manifest's ``containerPort`` says and
reaches other services by name through ``http_proxy`` (the pod's sidecar).
"""
