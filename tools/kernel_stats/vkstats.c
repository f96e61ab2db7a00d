// Compiles SPIR-V compute shaders on the Vulkan driver and prints their VK_KHR_pipeline_executable_properties
// statistics (on NVIDIA: registers a thread, shared memory a workgroup). Built and run by
// tools/kernel_stats/run.sh on the GPU machine; the SPIR-V comes from tools/kernel_stats/spv.ts.
// Usage: vkstats file.spv entry bindings [file.spv entry bindings ...], where bindings has one letter
// per binding 0..n-1 of set 0: u (uniform buffer) or s (storage buffer). Every feature the device
// offers is enabled (f16 arithmetic and 16-bit storage among them).
#include <vulkan/vulkan.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define CK(x) do { VkResult r_ = (x); if (r_ != VK_SUCCESS) { fprintf(stderr, "%s failed: %d\n", #x, r_); exit(1); } } while (0)
static void *readall(const char *p, size_t *n) {
  FILE *f = fopen(p, "rb"); if (!f) { perror(p); exit(1); }
  fseek(f, 0, SEEK_END); *n = ftell(f); fseek(f, 0, SEEK_SET);
  void *b = malloc(*n); if (fread(b, 1, *n, f) != *n) exit(1); fclose(f); return b;
}
int main(int argc, char **argv) {
  VkApplicationInfo app = {VK_STRUCTURE_TYPE_APPLICATION_INFO, 0, "vkstats", 1, 0, 0, VK_API_VERSION_1_3};
  VkInstanceCreateInfo ici = {VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, 0, 0, &app};
  VkInstance inst; CK(vkCreateInstance(&ici, 0, &inst));
  uint32_t n = 8; VkPhysicalDevice pds[8]; CK(vkEnumeratePhysicalDevices(inst, &n, pds));
  VkPhysicalDevice pd = pds[0];
  for (uint32_t i = 0; i < n; i++) { VkPhysicalDeviceProperties pp; vkGetPhysicalDeviceProperties(pds[i], &pp);
    printf("device %u: %s\n", i, pp.deviceName); if (pp.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU) pd = pds[i]; }
  VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR pe = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR};
  VkPhysicalDeviceVulkan13Features f13 = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES, &pe};
  VkPhysicalDeviceVulkan12Features f12 = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, &f13};
  VkPhysicalDeviceVulkan11Features f11 = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, &f12};
  VkPhysicalDeviceFeatures2 f2 = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, &f11};
  vkGetPhysicalDeviceFeatures2(pd, &f2);
  printf("pipelineExecutableInfo: %u shaderFloat16: %u storageBuffer16BitAccess: %u\n", pe.pipelineExecutableInfo, f12.shaderFloat16, f11.storageBuffer16BitAccess);
  float prio = 1; VkDeviceQueueCreateInfo qci = {VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, 0, 0, 0, 1, &prio};
  const char *ext[] = {"VK_KHR_pipeline_executable_properties"};
  VkDeviceCreateInfo dci = {VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, &f2, 0, 1, &qci, 0, 0, pe.pipelineExecutableInfo ? 1 : 0, ext, 0};
  VkDevice dev; CK(vkCreateDevice(pd, &dci, 0, &dev));
  PFN_vkGetPipelineExecutablePropertiesKHR gp = (void *)vkGetDeviceProcAddr(dev, "vkGetPipelineExecutablePropertiesKHR");
  PFN_vkGetPipelineExecutableStatisticsKHR gs = (void *)vkGetDeviceProcAddr(dev, "vkGetPipelineExecutableStatisticsKHR");
  if (argc < 4 || (argc - 1) % 3 != 0) {
    fprintf(stderr, "usage: vkstats file.spv entry bindings [file.spv entry bindings ...]\n");
    return 2;
  }
  for (int a = 1; a + 2 < argc; a += 3) {
    size_t sz; uint32_t *code = readall(argv[a], &sz);
    const char *entry = argv[a + 1], *kinds = argv[a + 2];
    uint32_t nb = strlen(kinds); VkDescriptorSetLayoutBinding b[32];
    if (nb > 32) { fprintf(stderr, "%s: more than 32 bindings\n", argv[a]); return 2; }
    for (uint32_t i = 0; i < nb; i++) { b[i] = (VkDescriptorSetLayoutBinding){i, kinds[i] == 'u' ? VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, 0}; }
    VkDescriptorSetLayoutCreateInfo dl = {VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, 0, 0, nb, b};
    VkDescriptorSetLayout dsl; CK(vkCreateDescriptorSetLayout(dev, &dl, 0, &dsl));
    VkPipelineLayoutCreateInfo pl = {VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, 0, 0, 1, &dsl};
    VkPipelineLayout layout; CK(vkCreatePipelineLayout(dev, &pl, 0, &layout));
    VkShaderModuleCreateInfo sm = {VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, 0, 0, sz, code};
    VkShaderModule mod; CK(vkCreateShaderModule(dev, &sm, 0, &mod));
    VkComputePipelineCreateInfo cp = {VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO, 0,
      VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR,
      {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, 0, 0, VK_SHADER_STAGE_COMPUTE_BIT, mod, entry, 0}, layout, 0, -1};
    VkPipeline pipe; CK(vkCreateComputePipelines(dev, 0, 1, &cp, 0, &pipe));
    printf("== %s %s\n", argv[a], entry);
    if (pe.pipelineExecutableInfo) {
      VkPipelineInfoKHR pi = {VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR, 0, pipe};
      uint32_t ne = 0; CK(gp(dev, &pi, &ne, 0));
      VkPipelineExecutablePropertiesKHR props[8]; for (int i = 0; i < 8; i++) props[i] = (VkPipelineExecutablePropertiesKHR){VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_PROPERTIES_KHR};
      if (ne > 8) ne = 8;
      CK(gp(dev, &pi, &ne, props));
      for (uint32_t e = 0; e < ne; e++) {
        printf("  executable %u: %s (%s) subgroup %u\n", e, props[e].name, props[e].description, props[e].subgroupSize);
        VkPipelineExecutableInfoKHR ei = {VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR, 0, pipe, e};
        uint32_t ns = 0; CK(gs(dev, &ei, &ns, 0));
        VkPipelineExecutableStatisticKHR st[64]; for (int i = 0; i < 64; i++) st[i] = (VkPipelineExecutableStatisticKHR){VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR};
        if (ns > 64) ns = 64;
        CK(gs(dev, &ei, &ns, st));
        for (uint32_t s = 0; s < ns; s++) {
          printf("    %s = ", st[s].name);
          switch (st[s].format) {
            case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR: printf("%u", st[s].value.b32); break;
            case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR: printf("%lld", (long long)st[s].value.i64); break;
            case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR: printf("%llu", (unsigned long long)st[s].value.u64); break;
            default: printf("%g", st[s].value.f64);
          }
          printf("  (%s)\n", st[s].description);
        }
      }
    }
    vkDestroyPipeline(dev, pipe, 0);
  }
  return 0;
}
