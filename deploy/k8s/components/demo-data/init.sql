-- One database per part (compose's postgres runs this once, on an empty volume; deploy/k8s's
-- demo StatefulSet mounts it the same way). The parts create their own tables at start.
CREATE DATABASE gateway;
CREATE DATABASE users;
CREATE DATABASE orders;
