package main

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// The default StorageClass of the test cluster and its provisioner. Pods are fake (KWOK),
// so volumes need no storage: the provisioner only creates PersistentVolume objects and
// kube-controller-manager binds them, exactly as with a real provisioner.
const (
	storageClassName = "standard"
	provisionerName  = "guildnet.io/fake-provisioner"
)

func defaultStorageClass() *storagev1.StorageClass {
	immediate := storagev1.VolumeBindingImmediate
	deletePolicy := corev1.PersistentVolumeReclaimDelete
	expand := true
	return &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        storageClassName,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"},
		},
		Provisioner:          provisionerName,
		ReclaimPolicy:        &deletePolicy,
		VolumeBindingMode:    &immediate,
		AllowVolumeExpansion: &expand,
	}
}

// runProvisioner creates a PersistentVolume for every unbound claim of the default class
// until ctx ends, and deletes released volumes (reclaim policy Delete).
func runProvisioner(ctx context.Context, c kubernetes.Interface) {
	factory := informers.NewSharedInformerFactory(c, 30*time.Second)
	claims := factory.Core().V1().PersistentVolumeClaims().Informer()
	volumes := factory.Core().V1().PersistentVolumes().Informer()
	_, _ = claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { provision(ctx, c, obj.(*corev1.PersistentVolumeClaim)) },
		UpdateFunc: func(_, obj any) { provision(ctx, c, obj.(*corev1.PersistentVolumeClaim)) },
	})
	_, _ = volumes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) { reclaim(ctx, c, obj.(*corev1.PersistentVolume)) },
	})
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
}

func provision(ctx context.Context, c kubernetes.Interface, pvc *corev1.PersistentVolumeClaim) {
	class := pvc.Spec.StorageClassName
	if pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil || class == nil || *class != storageClassName {
		return
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        "pvc-" + string(pvc.UID),
			Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": provisionerName},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: pvc.Spec.Resources.Requests[corev1.ResourceStorage]},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              storageClassName,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				// Never mounted: KWOK's pods have no containers.
				HostPath: &corev1.HostPathVolumeSource{Path: "/fake/" + string(pvc.UID)},
			},
		},
	}
	if _, err := c.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		fmt.Printf("provision %s/%s: %v\n", pvc.Namespace, pvc.Name, err)
	}
}

func reclaim(ctx context.Context, c kubernetes.Interface, pv *corev1.PersistentVolume) {
	if pv.Status.Phase != corev1.VolumeReleased || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete ||
		pv.Annotations["pv.kubernetes.io/provisioned-by"] != provisionerName {
		return
	}
	if err := c.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		fmt.Printf("reclaim %s: %v\n", pv.Name, err)
	}
}
